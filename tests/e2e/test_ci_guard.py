"""`make test` (and so `.ci/run`) must fail when pytest selects no tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_empty_selection_fails() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/adapt/test_config.py", "-q", "-k", "no_test_has_this_name"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr


def test_ci_entry_calls_make_test() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert "make test" in text
    assert "set -e" in text
