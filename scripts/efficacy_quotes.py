"""Check (or rewrite) every efficacy figure the README and docs quote against the test table.

Convention: a figure quoted from ``benchmarks/efficacy/test/table.json`` is followed directly by
an HTML comment naming its key, a ``/`` path below ``benchmarks`` in that file::

    DANN closes 47 %<!-- efficacy: radiograph/rows/dann/gap_closed_mean --> of the gap
    0.636<!-- efficacy: radiograph/rows/dann/target_mean -->

A figure written with ``%`` is the value x 100; the figure's own number of decimals is the
precision it is checked (and rewritten) at. The comment does not render on GitHub.

    python scripts/efficacy_quotes.py            # check: list every mismatch, exit 1 if any
    python scripts/efficacy_quotes.py --update   # rewrite each marked figure from the table
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "efficacy" / "test" / "table.json"
#: The number (optionally negative, optionally followed by " %") right before a marker.
QUOTE = re.compile(r"(?P<num>-?\d+(?:\.\d+)?)(?P<pct>\s?%)?(?P<gap>\s*)<!-- efficacy: (?P<key>[^ ]+) -->")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def lookup(table: dict, key: str) -> float:
    node = table["benchmarks"]
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{key!r}: no {part!r} in the table")
        node = node[part]
    if not isinstance(node, (int, float)):
        raise KeyError(f"{key!r}: not a number in the table ({type(node).__name__})")
    return float(node)


def _render(value: float, template: str, pct: bool) -> str:
    decimals = len(template.split(".")[1]) if "." in template else 0
    v = value * 100 if pct else value
    out = f"{v:.{decimals}f}"
    return "0" if out in ("-0", "-0.0") and decimals == 0 else out


def check(table: dict, files: list[Path]) -> list[str]:
    """Every mismatch as ``file:line: quoted X, table Y (key)``; an unknown key is a mismatch."""
    problems = []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for m in QUOTE.finditer(line):
                try:
                    want = _render(lookup(table, m["key"]), m["num"], bool(m["pct"]))
                except KeyError as exc:
                    problems.append(f"{f.relative_to(ROOT)}:{n}: {exc}")
                    continue
                if want != m["num"] and not (float(want) == 0 and float(m["num"]) == 0):
                    problems.append(f"{f.relative_to(ROOT)}:{n}: quoted {m['num']}{m['pct'] or ''}, "
                                    f"the table has {want} ({m['key']})")
            if "<!-- efficacy:" in line and not QUOTE.search(line):
                problems.append(f"{f.relative_to(ROOT)}:{n}: an efficacy marker without a number right before it")
    return problems


def update(table: dict, files: list[Path]) -> int:
    changed = 0
    for f in files:
        text = f.read_text(encoding="utf-8")

        def repl(m: re.Match) -> str:
            new = _render(lookup(table, m["key"]), m["num"], bool(m["pct"]))
            return f"{new}{m['pct'] or ''}{m['gap']}<!-- efficacy: {m['key']} -->"

        new_text = QUOTE.sub(repl, text)
        if new_text != text:
            f.write_text(new_text, encoding="utf-8")
            changed += 1
    return changed


def main(argv: list[str]) -> int:
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    if "--update" in argv:
        print(f"rewrote figures in {update(table, doc_files())} file(s)")
        return 0
    problems = check(table, doc_files())
    print("\n".join(problems) or "every quoted efficacy figure matches the table")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
