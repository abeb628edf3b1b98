"""`python -m shiftkit.adapt.cli` (what torchrun launches)."""

from shiftkit.adapt.cli import main

if __name__ == "__main__":
    main()
