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
