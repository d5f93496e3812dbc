"""What several commands share: argparse value types and rich consoles.

Rule: argument types raise `argparse.ArgumentTypeError`, so argparse prints the usage line and the
message and exits 2; no command validates a number by hand.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only by the commands that print with it
    from rich.console import Console


def positive_int(raw: str) -> int:
    """A whole number of at least 1 (counts, sizes, concurrency)."""
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be at least 1")
    return value


def positive_float(raw: str) -> float:
    """A number above 0 (seconds, prices, gigabytes)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be more than 0")
    return value


def console(stderr: bool = False) -> Console:
    """rich's console for tables and progress: plain text (messages may contain [brackets]); when piped,
    wide enough that rows and lines are never cut (rich would squeeze them into 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 240
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width)
