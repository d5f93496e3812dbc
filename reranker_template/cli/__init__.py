"""The `reranker` command: one entry point, one sub-command per job.

Rules:
- Each sub-command lives in a module of this package that declares its arguments (`register`) and runs
  it. At the top those modules import only the standard library, `cli.common` and light modules of the
  package; rich, requests, the Vast SDK and aiohttp are imported inside the commands that use them. So
  building the parser is cheap, and the supervisord programs (`reranker gateway`, `reranker provision`)
  and the entrypoint (`reranker boot`) load nothing they do not use (tests/test_cli.py checks it).
- Errors become exit codes here and only here: a `RerankerTemplateError` is one line
  `reranker: <message>` on stderr and its exit code (2 for what the user can fix, 1 for failures),
  Ctrl-C is 130; commands raise and never print a traceback for an error raised on purpose.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from reranker_template.cli.common import INTERMIXED
from reranker_template.errors import EXIT_USAGE, RerankerTemplateError, exit_code_for

DESCRIPTION = """\
Serve a reranker with vLLM behind an authenticated gateway, and work with the endpoint.

Settings come from the environment (MODEL_NAME, VLLM_ARGS, USE_ALL_GPUS, ...): see README.md,
or `reranker plan` to see what they would run.
"""

EPILOG = """\
examples:
  MODEL_NAME=BAAI/bge-reranker-v2-m3 reranker plan      what would run, and why
  MODEL_NAME=/models/minilm reranker serve             run the stack on this machine
  reranker token                                       the URL with the token, for a browser
"""


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and each sub-command's own parser by name."""
    from reranker_template.cli import client, gateway, offline, provision, stack, vast, worker

    parser = argparse.ArgumentParser(
        prog="reranker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (stack, gateway, provision, client, offline, vast, worker):
        module.register(subparsers)
    return parser, subparsers.choices


def build_parser() -> argparse.ArgumentParser:
    return _build()[0]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line as a Namespace. A sub-command marked with `common.intermixed` parses its own
    arguments with argparse's `parse_intermixed_args` (options anywhere among the documents); the top-level
    parser has no options of its own, so its first argument names the sub-command."""
    parser, commands = _build()
    command = commands.get(argv[0]) if argv else None
    if command is not None and command.get_default(INTERMIXED):
        args = command.parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        build_parser().print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except RerankerTemplateError as exc:
        print(f"reranker: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt as exc:
        print("reranker: interrupted", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
