"""Run-config keys declared as pydantic models: type, default, range or choices, help.

A group of keys is a ``Keys`` subclass; a field ``ridge_gamma`` is the key
``ridge-gamma``. The shared groups live in ``simulations/config.py``, a method's own group
next to its strategy (the strategy's ``keys`` attribute). From the declarations come the
checks (``parse``: one-line errors), the tables of docs/config.md and the defaults in
pyproject.toml, which Flower reads (``python -m simulations.keys`` syncs both; a test
fails while they disagree).
"""

from __future__ import annotations

import re
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import annotated_types as at
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic.fields import FieldInfo


def _integral(value):
    """2.0 -> 2: a YAML or command line may write an integer as a float."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Int = Annotated[int, BeforeValidator(_integral)]


class Keys(BaseModel):
    """A group of run-config keys (strict types: ``"yes"`` is no bool, ``"1"`` no number)."""

    model_config = ConfigDict(alias_generator=lambda name: name.replace("_", "-"), extra="ignore", strict=True,
                              allow_inf_nan=False, protected_namespaces=(), frozen=True)


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
        got = repr(value) if isinstance(value, str) else value
        wrong_type = field.annotation is float and first["type"] in ("float_type", "finite_number")
        raise error(f"{key} must be {'a number' if wrong_type else allowed(field)}, got {got}") from None


def _cell(value) -> str:
    text = "true" if value is True else "false" if value is False else '""' if value == "" else str(value)
    return f"`{text}`"


def table(group: type[Keys]) -> str:
    """The group's keys as a markdown table (key, default, allowed, meaning)."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, f in fields(group).items():
        help_ = (f.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_cell(f.default)} | {allowed(f)} | {help_} |")
    return "\n".join(rows)


ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "config.md"
MARK = re.compile(r"(<!-- keys: (\S+) -->\n).*?(<!-- end keys -->)", re.S)
RENAMES = re.compile(r"(<!-- renamed -->).*?(<!-- end renamed -->)", re.S)
SECTION = re.compile(r"(^\[tool\.flwr\.app\.config\]\n)(.*?)(?=^\[|\Z)", re.S | re.M)


def render(text: str, groups: dict[str, type[Keys]], renamed: dict[str, str] | None = None) -> str:
    """``text`` with each ``<!-- keys: NAME -->`` ... ``<!-- end keys -->`` block regenerated
    (and the ``<!-- renamed -->`` list); a group without a block gets a new section at the end."""
    text = MARK.sub(lambda m: m[1] + table(groups[m[2]]) + "\n" + m[3], text)
    listed = ", ".join(f"`{old}` -> `{new}`" for old, new in (renamed or {}).items()) or "none"
    text = RENAMES.sub(lambda m: m[1] + listed + m[2], text)
    for name, group in groups.items():
        if f"<!-- keys: {name} -->" not in text:
            text += f"\n## {name}\n\n<!-- keys: {name} -->\n{table(group)}\n<!-- end keys -->\n"
    return text


def render_pyproject(text: str, groups: dict[str, type[Keys]], renamed: dict[str, str] | None = None) -> str:
    """pyproject.toml's text with ``[tool.flwr.app.config]`` synced to the declarations:
    declared defaults replace the values in place (a ``renamed`` key gets its new name),
    missing keys are appended (small diffs)."""
    import tomli_w

    def line(key: str, value) -> str:
        return tomli_w.dumps({key: value}).strip()

    declared = {key: f.default for g in groups.values() for key, f in fields(g).items()}

    def sync(m: re.Match) -> str:
        body, seen = [], set()
        for row in m[2].rstrip("\n").split("\n"):
            key = row.split("=", 1)[0].strip().strip('"')
            key = (renamed or {}).get(key, key)
            if "=" in row and not row.lstrip().startswith("#") and key in declared:
                seen.add(key)
                row = line(key, declared[key])
            body.append(row)
        for name, group in groups.items():
            missing = [key for key in fields(group) if key not in seen]
            if missing:
                body += [f"# {name}"] + [line(key, declared[key]) for key in missing]
        return m[1] + "\n".join(body) + "\n\n"

    return SECTION.sub(sync, text, count=1)


def main(pyproject: Path | None = None, docs: Path = DOCS) -> int:
    """Rewrite docs/config.md's tables and pyproject.toml's defaults from the declarations."""
    import tomllib

    from simulations.config import PYPROJECT, RENAMED, key_groups

    pyproject = pyproject or PYPROJECT
    groups = key_groups()
    text = pyproject.read_text()
    declared = {key for g in groups.values() for key in fields(g)}
    stray = sorted(set(tomllib.loads(text)["tool"]["flwr"]["app"]["config"]) - declared - set(RENAMED))
    if stray:
        print(f"pyproject.toml keys {stray} are declared nowhere: declare them first (see docs/config.md)",
              file=sys.stderr)
        return 1
    for path, new in ((pyproject, render_pyproject(text, groups, RENAMED)),
                      (docs, render(docs.read_text(), groups, RENAMED))):
        changed = new != path.read_text()
        path.write_text(new)
        print(f"{path.name}: {'rewritten' if changed else 'up to date'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
