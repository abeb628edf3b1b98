"""The `shiftkit` command line: a thin layer over the Python API.

Each command group lives in its own `cli_*.py` module exposing `register(app)`; this file only
assembles them, so commands can be added without touching each other.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Before torch loads libgomp: idle OpenMP threads sleep instead of spinning. On a busy machine
# (CI, shared boxes) spinning threads tripled the CPU time of `shiftkit demo --quick`
# (60 s -> 22 s CPU, 257 s -> 81 s wall; benchmarks/README.md). Set it to ACTIVE to opt out.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
    "shiftkit.adapt.cli_run",       # demo, run
    "shiftkit.adapt.cli_synth",     # synth
    "shiftkit.adapt.cli_evaluate",  # audit, gap
    "shiftkit.adapt.cli_augment",   # augment preview
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
