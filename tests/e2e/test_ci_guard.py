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


def _run_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    """Run a two-test file under a copy of tests/conftest.py: one skips for a missing module."""
    import os
    import shutil

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\n"
        "def test_needs_missing_module():\n"
        "    pytest.importorskip('shiftkit_no_such_module')\n\n"
        "def test_skips_for_another_reason():\n"
        "    pytest.skip('only meaningful on a GPU')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)


def test_ci_turns_missing_dependency_skips_into_failures(tmp_path: Path) -> None:
    proc = _run_probe(tmp_path, "true")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "FAILED test_probe.py::test_needs_missing_module" in out, out
    assert "1 failed, 1 skipped" in out, out  # a skip for another reason stays a skip
    local = _run_probe(tmp_path, None)
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout + local.stderr


def test_ci_installs_what_tests_would_skip_without() -> None:
    import tomllib

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("pyarrow") for d in dev), dev  # the Parquet manifest test
    text = (ROOT / ".ci" / "run").read_text()
    assert "exit 1" in text and "chromium" in text  # no carrying on without the rendering test
