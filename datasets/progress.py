"""One place that decides how progress is shown: bars on a terminal, lines in a log.

Every loop in shiftkit that reports progress goes through :func:`progress_bar`:

- attached to a terminal (stderr is a TTY, or a Jupyter kernel): a tqdm bar, as before;
- otherwise (a log file, CI, ``make demo > log``): no bars at all. A bar created with
  ``lines=True`` (the trainer's epoch loop) prints one concise line per finished item, e.g.
  ``DANN epoch 2/6: train_loss=0.4123, val_loss=0.3810 (3.1 s)``; any other bar prints nothing.
  Nested per-step bars written to a file are what flooded logs with hundreds of lines an epoch.

``SHIFTKIT_PROGRESS`` overrides the decision: ``bars``, ``lines`` or ``off``.

This module lives in ``shiftkit.datasets`` because that package imports neither of the other
two, so all three can use it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["progress_bar", "progress_mode"]

_MODES = ("bars", "lines", "off")


def progress_mode(stream: TextIO | None = None) -> str:
    """``"bars"`` on a terminal or in a Jupyter kernel, ``"lines"`` otherwise.

    ``SHIFTKIT_PROGRESS`` (bars / lines / off) wins when set. ``stream`` defaults to stderr,
    where tqdm writes.
    """
    forced = os.environ.get("SHIFTKIT_PROGRESS", "").strip().lower()
    if forced in _MODES:
        return forced
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced stream
        tty = False
    return "bars" if tty or "ipykernel" in sys.modules else "lines"


class _Lines:
    """A tqdm look-alike for logs: one line per finished item (``lines=True``) or silence.

    Supports what shiftkit's loops use: iteration, ``update``, ``set_postfix``, ``close`` and
    the context-manager protocol.
    """

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, initial: int,
                 per_item: bool, stream: TextIO):
        self.iterable, self.desc, self.total, self.n = iterable, desc, total, initial
        self.per_item, self.stream = per_item, stream
        self.postfix: dict[str, Any] = {}
        self._t = time.perf_counter()

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            # Resumed: the loop body for ``item`` has finished.
            self.n += 1
            self._emit()

    def _emit(self) -> None:
        if not self.per_item:
            return
        now = time.perf_counter()
        where = f"{self.n}/{self.total}" if self.total else str(self.n)
        post = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        self.stream.write(f"{self.desc} {where}{': ' + post if post else ''} ({now - self._t:.1f} s)\n")
        self.stream.flush()
        self._t = now

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        pass

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None,
                 enabled: bool = True, lines: bool = False, leave: bool = False, initial: int = 0,
                 unit: str = "it", stream: TextIO | None = None) -> Any:
    """A progress bar over ``iterable`` that suits where the output goes.

    Args:
        iterable: what to iterate (or None and call ``update``).
        desc: label, e.g. ``"DANN"`` or ``"epoch 3/10"``.
        total: number of items (defaults to ``len(iterable)`` when it has one).
        enabled: False shows nothing anywhere (a caller's ``progress=False`` or a non-zero rank).
        lines: when not on a terminal, print one line per finished item; use for loops whose
            items take seconds (epochs), never for per-batch or per-image loops.
        leave, initial, unit: as tqdm's.
        stream: where to write (default stderr).

    Returns:
        a tqdm bar, or an object with the same iteration / ``update`` / ``set_postfix`` /
        ``close`` interface.
    """
    out = sys.stderr if stream is None else stream
    mode = progress_mode(out) if enabled else "off"
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if mode == "bars":
        from tqdm.auto import tqdm

        kw = {} if stream is None else {"file": stream}  # tqdm.notebook picks its own output
        return tqdm(iterable, desc=desc, total=total, leave=leave, initial=initial, unit=unit, **kw)
    return _Lines(iterable, desc, total, initial, per_item=lines and mode == "lines", stream=out)
