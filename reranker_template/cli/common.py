"""What several commands share: argparse value types, documents from the command line, rich consoles.

Rules: argument types raise `argparse.ArgumentTypeError`, so argparse prints the usage line and the
message and exits 2; no command validates a number by hand. Importing this module imports nothing
heavy (rich is imported when a console is asked for): every command module imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
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


INTERMIXED = "intermixed"  # the parser default that marks such a sub-command


def intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Mark a sub-command whose options may stand anywhere among its positionals (`query "q" --json doc1
    doc2`): `cli.parse_args` parses its arguments with argparse's `parse_intermixed_args`. Plain argparse
    stops taking positionals after the first option once `DOC*` has matched, and rejects the rest."""
    parser.set_defaults(**{INTERMIXED: True})
    return parser


def read_documents(docs: Sequence[str], file: str | None, stdin_is_tty: bool) -> list[str]:
    """DOC arguments, else --file (one per line, blank lines skipped; "-" is stdin), else piped stdin."""
    if docs:
        return list(docs)
    if file:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as handle:
                text = handle.read()
    elif not stdin_is_tty:
        text = sys.stdin.read()
    else:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def console(stderr: bool = False) -> Console:
    """rich's console for tables and progress: plain text (messages may contain [brackets]); when piped,
    wide enough that rows and lines are never cut (rich would squeeze them into 80 columns)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 240
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width)
