"""``python -m simulations.keys``: docs/config.md's key tables and pyproject.toml's defaults,
rewritten from the declarations (``common/keys.py``); a test fails while they disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from common.keys import Keys, allowed, fields


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
    missing keys are appended (small diffs); an old key renamed to one already there is dropped."""
    import tomli_w

    def line(key: str, value) -> str:
        return tomli_w.dumps({key: value}).strip()

    declared = {key: f.default for g in groups.values() for key, f in fields(g).items()}

    def sync(m: re.Match) -> str:
        body, seen = [], set()
        rows = m[2].rstrip("\n").split("\n")
        present = {row.split("=", 1)[0].strip().strip('"') for row in rows if "=" in row}
        for row in rows:
            old = row.split("=", 1)[0].strip().strip('"')
            key = (renamed or {}).get(old, old)
            if key != old and key in present:
                continue
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
