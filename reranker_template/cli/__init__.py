"""The `reranker` command: one entry point, one subcommand per job.

Each subcommand lives in the module that does the work; this file only wires them up and turns the
errors a user can fix (bad settings, an impossible plan) into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    from reranker_template.cli import (
        client as cli_client,
    )
    from reranker_template.cli import (
        gateway as cli_gateway,
    )
    from reranker_template.cli import (
        offline as cli_offline,
    )
    from reranker_template.cli import (
        provision as cli_provision,
    )
    from reranker_template.cli import (
        stack as cli_stack,
    )
    from reranker_template.cli import (
        vast as cli_vast,
    )

    parser = argparse.ArgumentParser(
        prog="reranker",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (cli_stack, cli_gateway, cli_provision, cli_client, cli_offline, cli_vast):
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
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
