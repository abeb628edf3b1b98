"""`benchmarks/run_all.py`: a failing or hanging script becomes a row; the README table is replaced."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common  # noqa: E402
import run_all  # noqa: E402


def test_failing_and_hanging_scripts_become_rows(tmp_path: Path) -> None:
    bad = tmp_path / "bench_zz_broken.py"
    bad.write_text("raise RuntimeError('boom in the benchmark')\n")
    rows, status = run_all.run_script(bad, timeout=60, machine="test box")
    assert status["returncode"] != 0
    assert len(rows) == 1 and rows[0]["shiftkit"] is None and rows[0]["met"] is None
    assert "boom in the benchmark" in rows[0]["notes"]

    slow = tmp_path / "bench_zz_slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    rows, status = run_all.run_script(slow, timeout=1, machine="test box")
    assert status["timed_out"] and "timed out" in rows[0]["notes"]


def test_readme_block_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n\n{run_all.START}\nold table\n{run_all.END}\n\nafter\n")
    row = _common.make_row("x", shiftkit=1.2, baseline=1.0, unit="s", max_ratio=1.15)
    block = run_all.render_block([row], [], {"cores": 2, "load_avg_1m": 0.5}, "make bench", 60.0)
    run_all.update_readme(block, readme)
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# title") and text.rstrip().endswith("after")
    assert text.count(run_all.START) == 1 and "| x | 1.2 | 1 | s | 1.2 | ratio <= 1.15 | **no** |" in text


def test_make_row_goal_checks() -> None:
    assert _common.make_row("a", shiftkit=1.1, baseline=1.0, unit="s", max_ratio=1.15)["met"] is True
    assert _common.make_row("b", shiftkit=2.5, unit="GB", max_value=2.0)["met"] is False
    assert _common.make_row("c", shiftkit=float("nan"), baseline=1.0, unit="s", max_ratio=1.15)["met"] is None
