"""Error types shared by every shiftkit package.

They live here because `shiftkit.datasets` depends on nothing else in shiftkit, so both
`evaluation` and `adapt` can import them without breaking the one-way dependency rule.
"""

from __future__ import annotations


class ShiftkitError(Exception):
    """Base of every error shiftkit raises on purpose."""


class DataError(ShiftkitError, ValueError):
    """Bad input data. The message names the file, row or column at fault."""


class ManifestError(DataError):
    """A manifest has one or more problems; `problems` lists all of them."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{shown}{more}")


class ImageReadError(DataError):
    """An image or mask file could not be read."""

    def __init__(self, path: object, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(ShiftkitError, ValueError):
    """A configuration is invalid; `problems` lists every problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{shown}")
