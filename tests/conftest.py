"""Shared test set-up: quiet, deterministic, and sized for a 2-core CI machine."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see benchmarks/bench_omp.py

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_finish(session: pytest.Session) -> None:
    # A run that selects nothing must not look like a pass (pytest exits 5 as well).
    if not session.items and not session.config.getoption("collectonly"):
        raise pytest.UsageError("no tests were collected")


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    torch.manual_seed(0)


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


#: Skip reasons that mean "a dependency the project can install is missing": importorskip's
#: own wording, and the wording of the tests' explicit skips for system packages (Chromium).
MISSING_DEPENDENCY = ("could not import", "not installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # noqa: ARG001
    """Under CI=true, a skip for a missing installable dependency is a failure.

    Locally a missing optional package still skips with its reason; CI installs everything
    (the `dev` extra, Chromium in .ci/run), so such a skip there means a test silently stopped
    running.
    """
    outcome = yield
    rep = outcome.get_result()
    if not (rep.skipped and _ci()) or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    if any(k in reason.lower() for k in MISSING_DEPENDENCY):
        rep.outcome = "failed"
        rep.longrepr = f"CI=true: a test may not skip for a missing installable dependency: {reason}"
