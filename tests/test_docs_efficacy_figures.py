"""Every efficacy figure the README and docs quote equals benchmarks/efficacy/test/table.json
(the convention and the checker: scripts/efficacy_quotes.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("efficacy_quotes", ROOT / "scripts" / "efficacy_quotes.py")
quotes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quotes)


def test_every_quoted_efficacy_figure_matches_the_test_table() -> None:
    table = json.loads(quotes.TABLE.read_text(encoding="utf-8"))
    assert quotes.check(table, quotes.doc_files()) == []


def test_the_checker_catches_a_wrong_figure_and_update_fixes_it(tmp_path: Path) -> None:
    table = {"benchmarks": {"b": {"rows": {"m": {"gap_closed_mean": 0.4712, "target_mean": 0.63712}}}}}
    doc = tmp_path / "x.md"
    doc.write_text("closes 47 %<!-- efficacy: b/rows/m/gap_closed_mean --> (0.637<!-- efficacy: b/rows/m/target_mean -->)\n"
                   "and 52 %<!-- efficacy: b/rows/m/gap_closed_mean -->, 0.64<!-- efficacy: b/rows/nope/target_mean -->\n")
    problems = _check(table, doc)
    assert len(problems) == 2 and "quoted 52 %" in problems[0] and "nope" in problems[1], problems
    doc.write_text(doc.read_text().replace(", 0.64<!-- efficacy: b/rows/nope/target_mean -->", ""))
    quotes.update(table, [doc])
    assert "closes 47 %" in doc.read_text() and "and 47 %" in doc.read_text()
    assert _check(table, doc) == []


def _check(table: dict, doc: Path) -> list[str]:
    old = quotes.ROOT
    quotes.ROOT = doc.parent
    try:
        return quotes.check(table, [doc])
    finally:
        quotes.ROOT = old
