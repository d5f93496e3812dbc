"""`reranker score-offline`: score documents with the model loaded in this process (no server)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from reranker_template.cli.common import console, intermixed, positive_int, read_documents

REEXEC_MARK = "RERANKER_OFFLINE_PRELOADED"


def preload_env(plan_env: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to restart with so LD_PRELOAD takes effect (it only works at process start), or None."""
    wanted = plan_env.get("LD_PRELOAD")
    if (
        not wanted
        or environ.get(REEXEC_MARK)
        or set(wanted.split(":")) <= set(environ.get("LD_PRELOAD", "").split(":"))
    ):
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [wanted, environ.get("LD_PRELOAD", "")]))
    env[REEXEC_MARK] = "1"
    return env


def cmd_score_offline(args: argparse.Namespace) -> int:
    from reranker_template.client.offline import OfflineReranker, plan_for

    env = dict(os.environ)
    if args.model:
        env["MODEL_NAME"] = args.model
    plan = plan_for(None, env)  # the one plan: settings mistakes end here, before vLLM is loaded
    restart = preload_env(plan.vllm_env, env)
    if restart is not None:  # before reading stdin: the new process inherits it unread
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "reranker_template.cli", *sys.argv[1:]], restart)
    documents = read_documents(args.documents, args.file, sys.stdin.isatty())
    if not documents:
        print(
            "reranker score-offline: no documents: give them as arguments, with --file FILE, or on stdin",
            file=sys.stderr,
        )
        return 1
    # vLLM logs to stdout by default; keep stdout for our answer.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    reranker = OfflineReranker(plan=plan)
    try:
        ranked = reranker.rerank(args.query, documents)
    finally:
        reranker.close()
    scores = [value for _, value in sorted(ranked)]  # input order
    rows = [
        {"rank": rank, "index": index, "score": value, "document": documents[index]}
        for rank, (index, value) in enumerate(ranked[: args.top_n] if args.top_n else ranked, start=1)
    ]
    if args.json:
        print(json.dumps({"model": plan.model, "query": args.query, "scores": scores, "results": rows}, indent=2))
    else:
        print_table(f"{plan.model} (offline): {args.query}", rows)
    return 0


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in ("rank", "score", "document", "index"):
        table.add_column(name, justify="left" if name == "document" else "right", overflow="fold")
    for row in rows:
        table.add_row(str(row["rank"]), f"{row['score']:.6f}", row["document"], str(row["index"]))
    console().print(table)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "score-offline",
        help="score documents with the model loaded here (no server), with the server's flags",
        description="Load the model with vllm.LLM using exactly the vLLM flags `reranker serve` would use "
        "(same settings: MODEL_NAME, VLLM_ARGS, presets, dtype), score every document against the query, "
        "print them best first. For quick checks and batch jobs; loading takes as long as a server start.",
        epilog="examples:\n"
        "  MODEL_NAME=/models/bge-reranker-base reranker score-offline "
        '"what is deep learning?" "Deep learning is ..." "I like pizza"\n'
        '  reranker score-offline --model BAAI/bge-reranker-base "green tea" --file docs.txt --json',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    intermixed(parser)
    parser.add_argument("query", help="the question")
    parser.add_argument("documents", nargs="*", metavar="DOC", help="documents (or --file, or one per line on stdin)")
    parser.add_argument("--file", "-f", help="read documents from this file, one per line")
    parser.add_argument(
        "--model",
        help="model id or directory (default: $MODEL_NAME, else the bundled cross-encoder, as reranker serve)",
    )
    parser.add_argument("--top-n", type=positive_int, help="print only the best N")
    parser.add_argument(
        "--json", action="store_true", help="print JSON: {model, query, scores (input order), results (best first)}"
    )
    parser.set_defaults(func=cmd_score_offline)
