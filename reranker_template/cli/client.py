"""`reranker query`, `reranker bench`, `reranker health`: use an endpoint from the command line.

URL and token come from flags, else RERANKER_URL / RERANKER_TOKEN, else the stack on this machine
(http://127.0.0.1:GATEWAY_PORT and the token it generated), so on the serving box no flag is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reranker_template.client.http import RerankerClient
from reranker_template.errors import RerankerError

EXIT_FAILED = 1


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str | None
    verify: bool  # False only for our own stack's self-signed certificate on loopback


def local_endpoint(env: Mapping[str, str]) -> Endpoint:
    """The stack on this machine: its gateway port and token (configured, else the generated token file)."""
    from reranker_template.paths import default_paths
    from reranker_template.settings import load_settings

    settings = load_settings(env)
    scheme = "https" if settings.enable_https else "http"
    token: str | None = None
    if settings.enable_auth:
        if settings.tokens:
            token = settings.tokens[0]
        else:
            token_file = default_paths(env).token_file
            try:
                token = token_file.read_text().strip() or None
            except OSError:
                token = None
    return Endpoint(f"{scheme}://127.0.0.1:{settings.gateway_port}", token, verify=not settings.enable_https)


def resolve_endpoint(url: str | None, token: str | None, env: Mapping[str, str]) -> Endpoint:
    """Flags win, then RERANKER_URL / RERANKER_TOKEN, then the local stack."""
    url = url or env.get("RERANKER_URL") or None
    token = token if token is not None else (env.get("RERANKER_TOKEN") or None)
    if url and token is not None:
        return Endpoint(url.rstrip("/"), token or None, verify=True)
    local = local_endpoint(env)
    if url:
        # Another URL without a token: the local token only fits the local stack.
        is_local = url.rstrip("/") == local.url
        return Endpoint(url.rstrip("/"), local.token if is_local else None, verify=local.verify if is_local else True)
    return Endpoint(local.url, token if token is not None else local.token, verify=local.verify)


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


def connect_hint(endpoint: Endpoint, exc: RerankerError) -> str:
    if exc.status is None:
        return f"{exc.message} (is the stack running? `reranker serve`, or set --url / RERANKER_URL)"
    if exc.status == 401:
        return f"{endpoint.url} refused the token (HTTP 401): pass --token or set RERANKER_TOKEN (`reranker token --token-only` on the server prints it)"
    return str(exc)


# --- query ---------------------------------------------------------------------------------------
def cmd_query(args: argparse.Namespace) -> int:
    documents = read_documents(args.documents, args.file, sys.stdin.isatty())
    if not documents:
        print(
            "reranker query: no documents: give them as arguments, with --file FILE (one per line), or on stdin",
            file=sys.stderr,
        )
        return EXIT_FAILED
    endpoint = resolve_endpoint(args.url, args.token, os.environ)
    with RerankerClient(
        endpoint.url, endpoint.token, verify=endpoint.verify, timeout=args.timeout, retry_for=args.wait
    ) as client:
        try:
            result = client.rerank(args.query, documents, top_n=args.top_n, instruction=args.instruction)
        except RerankerError as exc:
            print(f"reranker query: {connect_hint(endpoint, exc)}", file=sys.stderr)
            return EXIT_FAILED
    rows = [
        {
            "rank": rank,
            "index": hit.index,
            "score": hit.relevance_score,
            "document": documents[hit.index] if 0 <= hit.index < len(documents) else hit.document,
        }
        for rank, hit in enumerate(result.results, start=1)
    ]
    if args.json:
        print(json.dumps({"model": result.model, "query": args.query, "results": rows}, indent=2))
        return 0
    from rich.table import Table

    table = Table(title=f"{result.model}: {args.query}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document", overflow="fold")
    table.add_column("index", justify="right")
    for row in rows:
        table.add_row(str(row["rank"]), f"{row['score']:.6f}", row["document"] or "", str(row["index"]))
    wide_console().print(table)
    return 0


def wide_console() -> Any:
    """rich's console; when piped (no terminal width to respect) wide enough that nothing is cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


# --- health --------------------------------------------------------------------------------------
def cmd_health(args: argparse.Namespace) -> int:
    endpoint = resolve_endpoint(args.url, None, os.environ)
    with RerankerClient(endpoint.url, None, verify=endpoint.verify) as client:
        try:
            health = client.wait_until_ready(args.wait) if args.wait else client.health()
        except RerankerError as exc:
            if args.json:
                print(
                    json.dumps(
                        {
                            "url": endpoint.url,
                            "status": "unreachable" if exc.status is None else "not ready",
                            "reason": exc.message,
                        }
                    )
                )
            else:
                print(exc.message if exc.status is None else f"{endpoint.url}: {exc.message}")
            return EXIT_FAILED
    if args.json:
        print(
            json.dumps({"url": endpoint.url, "http_status": health.http_status, **health.body, "status": health.status})
        )
    else:
        detail = f" ({health.reason})" if health.reason and not health.ready else ""
        model = f", model {health.body['model']}" if health.body.get("model") else ""
        print(f"{endpoint.url}: {health.status}{detail}{model}")
    return 0 if health.ready else EXIT_FAILED


# --- bench ---------------------------------------------------------------------------------------
def parse_levels(raw: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected whole numbers separated by commas, like 1,8,32") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"{raw!r}: expected positive whole numbers separated by commas, like 1,8,32")
    return levels


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: must be at least 1")
    return value


def bench_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    cfg = report["config"]
    table = Table(
        title=f"{cfg['endpoint']}: {cfg['docs']} docs x ~{cfg['doc_tokens']} tokens per request, model {cfg['model']}",
        title_justify="left",
    )
    for name in ("target", "conc.", "requests", "req/s", "pairs/s", "p50 ms", "p95 ms", "p99 ms", "errors", "invalid"):
        table.add_column(name, justify="left" if name == "target" else "right")

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    for row in report["results"]:
        table.add_row(
            row["target"],
            str(row["concurrency"]),
            str(row["requests"]),
            num(row["requests_per_s"]),
            num(row["pairs_per_s"]),
            num(row["latency_ms_p50"]),
            num(row["latency_ms_p95"]),
            num(row["latency_ms_p99"]),
            str(row["errors"]),
            str(row["invalid"]),
        )
    return table


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reranker_template.client.bench import BenchConfig, Workload, run_bench, total_requests

    endpoint = resolve_endpoint(args.url, args.token, os.environ)
    compare_token = args.compare_token if args.compare_token is not None else (endpoint.token if args.compare else None)
    with RerankerClient(endpoint.url, endpoint.token, verify=endpoint.verify, retry_for=0) as client:
        try:
            model = client.served_model()
        except RerankerError as exc:
            print(f"reranker bench: {connect_hint(endpoint, exc)}", file=sys.stderr)
            return EXIT_FAILED
    config = BenchConfig(
        url=endpoint.url,
        token=endpoint.token,
        workload=Workload(endpoint=args.endpoint, docs=args.docs, doc_tokens=args.doc_tokens),
        concurrency=args.concurrency,
        requests=args.requests,
        compare_url=args.compare.rstrip("/") if args.compare else None,
        compare_token=compare_token,
        warmup=args.warmup,
        timeout=args.timeout,
    )
    err = Console(stderr=True)
    show_progress = err.is_terminal and not args.no_progress
    with Progress(
        TextColumn("bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not show_progress,
        transient=True,
    ) as progress:
        task = progress.add_task("requests", total=total_requests(config))
        try:
            report = run_bench(config, model, advance=lambda: progress.advance(task))
        except RerankerError as exc:
            print(f"reranker bench: {connect_hint(endpoint, exc)}", file=sys.stderr)
            return EXIT_FAILED
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        console = wide_console()
        console.print(
            f"primary = {endpoint.url}" + (f", compare = {config.compare_url}" if config.compare_url else ""),
            highlight=False,
        )
        console.print(bench_table(report))
        for comp in report["comparisons"]:
            console.print(
                f"concurrency {comp['concurrency']}: compare / primary: req/s x{comp['requests_per_s_ratio']}, "
                f"p50 latency x{comp['latency_p50_ratio']} ({comp['latency_p50_delta_ms']} ms)",
                highlight=False,
            )
        for row in report["results"]:
            if row["first_problem"]:
                console.print(
                    f"[yellow]{row['url']} at concurrency {row['concurrency']}: first problem: {row['first_problem']}[/]",
                    highlight=False,
                )
    failed = any(row["errors"] or row["invalid"] for row in report["results"])
    return EXIT_FAILED if failed else 0


# --- wiring --------------------------------------------------------------------------------------
class IntermixedParser(argparse.ArgumentParser):
    """Options anywhere among the documents (`query "q" --json doc1 doc2`): plain argparse stops taking
    positionals after the first option once `DOC*` was matched, and rejects the rest."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def intermixed(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.__class__ = IntermixedParser
    return parser


def add_endpoint_flags(parser: argparse.ArgumentParser, token: bool = True) -> None:
    parser.add_argument(
        "--url",
        help="the endpoint (default: $RERANKER_URL, else the stack on this machine: http://127.0.0.1:$GATEWAY_PORT)",
    )
    if token:
        parser.add_argument("--token", help="the access token (default: $RERANKER_TOKEN, else the local stack's token)")


def register(subparsers: argparse._SubParsersAction) -> None:
    formatter = argparse.RawDescriptionHelpFormatter

    query = subparsers.add_parser(
        "query",
        help="rerank documents for a question and print them best first",
        description="Send one rerank request and print the documents best first (rank, score, document, "
        "position in your input). Waits through a model that is still loading (see --wait).",
        epilog="examples:\n"
        '  reranker query "what is deep learning?" "Deep learning uses neural networks" "I like pizza"\n'
        '  reranker query "green tea benefits" --file docs.txt --top-n 3\n'
        '  grep -h tea notes/*.txt | reranker query "green tea benefits" --json | jq ".results[0]"\n'
        '  RERANKER_URL=http://1.2.3.4:41234 RERANKER_TOKEN=... reranker query "q" "doc a" "doc b"',
        formatter_class=formatter,
    )
    intermixed(query)
    query.add_argument("query", help="the question")
    query.add_argument(
        "documents", nargs="*", metavar="DOC", help="documents (or use --file, or pipe them one per line)"
    )
    query.add_argument("--file", "-f", help="read documents from this file, one per line ('-' for stdin)")
    query.add_argument("--top-n", type=positive_int, help="return only the best N")
    query.add_argument("--instruction", help="task instruction for instruction-aware rerankers (Qwen3-Reranker)")
    query.add_argument(
        "--json", action="store_true", help="print JSON: {model, query, results: [{rank, index, score, document}]}"
    )
    query.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the answer (default 120)")
    query.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to keep retrying while the model loads or the server restarts (default 60)",
    )
    add_endpoint_flags(query)
    query.set_defaults(func=cmd_query)

    bench = subparsers.add_parser(
        "bench",
        help="measure throughput and latency of an endpoint (and compare two)",
        description="Load the endpoint at each concurrency level and report requests/s, pairs/s (documents "
        "scored per second), p50/p95/p99 latency and errors. Every answer is checked (count, order, indices). "
        "--compare runs the same load against a second URL, alternating rounds, and prints the ratio: "
        "gateway versus vLLM directly shows what the gateway costs.",
        epilog="examples:\n"
        "  reranker bench --concurrency 1,8 --requests 32\n"
        "  reranker bench --url http://127.0.0.1:8000 --compare http://127.0.0.1:18000 --json > bench.json\n"
        "  reranker bench --endpoint score --docs 64 --doc-tokens 256",
        formatter_class=formatter,
    )
    add_endpoint_flags(bench)
    bench.add_argument(
        "--concurrency", type=parse_levels, default=(1, 8, 32), help="comma-separated levels (default 1,8,32)"
    )
    bench.add_argument("--docs", type=positive_int, default=16, help="documents per request (default 16)")
    bench.add_argument(
        "--doc-tokens", type=positive_int, default=128, help="about this many tokens per document (default 128)"
    )
    bench.add_argument(
        "--requests", type=positive_int, help="requests per level and URL (default max(16, 4 x concurrency))"
    )
    bench.add_argument(
        "--endpoint", choices=("rerank", "score"), default="rerank", help="/v1/rerank (default) or /v1/score"
    )
    bench.add_argument(
        "--compare",
        metavar="URL2",
        help="run the same load against this URL too (e.g. vLLM directly: http://127.0.0.1:18000)",
    )
    bench.add_argument("--compare-token", help="token for --compare (default: the same token)")
    bench.add_argument("--warmup", type=positive_int, default=4, help="unmeasured requests per URL first (default 4)")
    bench.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per request before it counts as an error (default 120)"
    )
    bench.add_argument("--json", action="store_true", help="print the report as JSON (config, results, comparisons)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.set_defaults(func=cmd_bench)

    health = subparsers.add_parser(
        "health",
        help="is the endpoint ready? (exit 0 ready, 1 not)",
        description="Ask the endpoint's /health (no token needed) and print ready, loading (with the phase), "
        "down or failed (with the reason). Exit status 0 only when ready.",
        epilog='examples:\n  reranker health\n  reranker health --wait 600 && reranker query "q" "doc"',
        formatter_class=formatter,
    )
    add_endpoint_flags(health, token=False)
    health.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to this long for ready")
    health.add_argument("--json", action="store_true", help="print /health's answer as JSON")
    health.set_defaults(func=cmd_health)
