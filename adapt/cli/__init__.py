"""The `shiftkit` command line: a thin layer over the Python API.

Each command group lives in its own `cli_*.py` module exposing `register(app)`; this file only
assembles them, so commands can be added without touching each other.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


def _busy_machine() -> bool:
    """True when the 1-minute load average is at least the number of cores (oversubscribed)."""
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1)
    except (AttributeError, OSError):  # no load average on this platform
        return False


# Before torch loads libgomp. On a busy machine spinning OpenMP threads take the time slice
# their partners need: `shiftkit demo --quick` went 257 s -> 102 s wall with idle threads
# sleeping (PASSIVE) at load 15 on 2 cores. On an idle machine spinning is faster (28.8 s vs
# 34.9 s), so libgomp's default stays. An OMP_WAIT_POLICY the user set always wins.
if "OMP_WAIT_POLICY" not in os.environ and _busy_machine():
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import typer  # noqa: E402

app = typer.Typer(
    name="shiftkit",
    help="Adapt image models across domain shift and measure what the shift costs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules that add commands; a missing one (optional feature not built) is skipped.
_COMMAND_MODULES = (
    "shiftkit.adapt.cli.run",       # demo, run
    "shiftkit.adapt.cli.synth",     # synth
    "shiftkit.adapt.cli.evaluate",  # audit, gap
    "shiftkit.adapt.cli.augment",   # augment preview
    "shiftkit.adapt.cli.rank",      # rank
    "shiftkit.adapt.cli.monitor",   # monitor, synth-stream
    "shiftkit.adapt.cli.efficacy",  # benchmark, select
)

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:
        if exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
