"""Run-config keys declared as pydantic models: type, default, range or choices, help.

A group of keys is a ``Keys`` subclass; a field ``ridge_gamma`` is the key
``ridge-gamma``. The shared groups live in ``simulations/config.py``, the evaluation and
audit groups next to their code (``evaluation/ood.py``, ``strategies/audit.py``), a
method's own group next to its strategy (the strategy's ``keys`` attribute). ``parse``
types and checks a group's keys with one-line errors; a group's ``check`` adds the rules
that involve several keys. This module imports nothing of the project, so that every
floor may declare keys.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Literal

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo


def _integral(value):
    """2.0 -> 2: a YAML or command line may write an integer as a float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]


class ConfigError(ValueError):
    """A run-config value that cannot be used."""


class Keys(BaseModel):
    """A group of run-config keys (strict types: ``"yes"`` is no bool, ``"1"`` no number)."""

    model_config = ConfigDict(alias_generator=lambda name: name.replace("_", "-"), extra="ignore", strict=True,
                              allow_inf_nan=False, protected_namespaces=(), frozen=True)

    @classmethod
    def check(cls, cfg: dict) -> None:
        """Rules that involve several keys (or names checked against a registry): raise
        ``ConfigError`` with one line. ``cfg`` is the whole run config, typed."""


def fields(group: type[Keys]) -> dict[str, FieldInfo]:
    """Key name -> its declaration."""
    return {f.alias: f for f in group.model_fields.values()}


def _bound(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _describe(kind, metadata) -> str:
    if typing.get_origin(kind) is Annotated:
        kind, *extra = typing.get_args(kind)
        metadata = [*metadata, *extra]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k, metadata) for k in typing.get_args(kind))
    if typing.get_origin(kind) is Literal:
        choices = [str(c) for c in typing.get_args(kind)]
        return " or ".join(choices) if len(choices) <= 2 else "one of " + ", ".join(choices)
    if kind is bool:
        return "true or false"
    flat = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    bounds = {type(m): getattr(m, type(m).__name__.lower())
              for m in flat if isinstance(m, (at.Ge, at.Gt, at.Le, at.Lt))}
    low = f"[{_bound(bounds[at.Ge])}" if at.Ge in bounds else f"({_bound(bounds[at.Gt])}" if at.Gt in bounds else None
    high = f"{_bound(bounds[at.Le])}]" if at.Le in bounds else f"{_bound(bounds[at.Lt])})" if at.Lt in bounds else None
    if low and high:
        rng = f"in {low}, {high}"
    elif low:
        rng = (">= " if low[0] == "[" else "> ") + low[1:]
    elif high:
        rng = ("<= " if high[-1] == "]" else "< ") + high[:-1]
    else:
        rng = ""
    if kind is int:
        return f"an integer {rng}".strip()
    if kind is float:
        return rng or "a number"
    if any(isinstance(m, at.MinLen) and m.min_length > 0 for m in flat):
        return "a non-empty string"
    return "a string"


def allowed(field: FieldInfo) -> str:
    """What a value must be, in words: 'an integer >= 1', 'in [0, 1]', 'weights or statistics'."""
    return _describe(field.annotation, field.metadata)


def shown(value, limit: int = 80) -> str:
    """``value`` as an error message echoes it: ``repr`` (quotes, newlines and control
    characters escaped) cut to ``limit`` characters, so a message stays one short line."""
    text = repr(value) if isinstance(value, str) else str(value).encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse(group: type[Keys], cfg: dict, error: type[Exception]) -> dict:
    """``cfg``'s values of ``group``'s keys, typed and checked; ``error`` with one line if not."""
    try:
        return group.model_validate(cfg).model_dump(by_alias=True)
    except ValidationError as err:
        first = err.errors()[0]
        key = first["loc"][0]
        field = fields(group).get(key)
        if field is None:  # a model-level check
            raise error(first["msg"].removeprefix("Value error, ")) from None
        value = cfg.get(key)
        got = shown(value)
        wrong_type = field.annotation is float and first["type"] in ("float_type", "finite_number")
        raise error(f"{key} must be {'a number' if wrong_type else allowed(field)}, got {got}") from None
