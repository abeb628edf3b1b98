"""Data seeds of the embedded benchmarks, split by purpose.

A data seed decides which images a generator draws (``sample(..., seed=...)``); a model seed
decides initialisation and batch order. They are separate numbers.

- ``DEV_DATA_SEEDS``: every design choice, default, threshold and grid is made on these.
- ``TEST_DATA_SEEDS``: only for reporting efficacy. A tuning script or config that names one
  of them is a bug (a test scans for it).

Seeds below 100 were used by earlier tests and design runs; they belong to neither list.
"""

from __future__ import annotations

DEV_DATA_SEEDS: tuple[int, ...] = tuple(range(100, 120))
TEST_DATA_SEEDS: tuple[int, ...] = tuple(range(9000, 9010))

__all__ = ["DEV_DATA_SEEDS", "TEST_DATA_SEEDS"]
