"""`reranker query`, `reranker bench`, `reranker health`: use an endpoint from the command line.

URL and token come from flags, else RERANKER_URL / RERANKER_TOKEN, else the stack on this machine
(http://127.0.0.1:GATEWAY_PORT and its token), so on the serving box no flag is needed.
Errors are raised (`RerankerError`, with a hint where one helps) and printed by `cli.main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reranker_template.cli.common import console, intermixed, positive_float, positive_int, read_documents
from reranker_template.errors import EXIT_FAILURE, EXIT_OK, ConfigError, RerankerError, UserError

if TYPE_CHECKING:  # rich and requests (the client) are imported by the commands that use them
    from rich.table import Table

    from reranker_template.client.bench import BenchConfig


@dataclass(frozen=True)
class Endpoint:
    url: str
    token: str | None
    verify: bool  # False only for our own stack's self-signed certificate on loopback


def local_endpoint(env: Mapping[str, str]) -> Endpoint:
    """The stack on this machine: its gateway port and the token it accepts (configured, else generated)."""
    from reranker_template.gateway.auth import local_tokens
    from reranker_template.paths import default_paths
    from reranker_template.settings import load_settings

    settings = load_settings(env)
    scheme = "https" if settings.enable_https else "http"
    tokens = local_tokens(settings.tokens, default_paths(env).token_file) if settings.enable_auth else ()
    url = f"{scheme}://127.0.0.1:{settings.gateway_port}"
    return Endpoint(url, tokens[0] if tokens else None, verify=not settings.enable_https)


def resolve_endpoint(url: str | None, token: str | None, env: Mapping[str, str]) -> Endpoint:
    """Flags win, then RERANKER_URL / RERANKER_TOKEN, then the local stack. The local stack's token goes
    only to the local stack's URL, and only that URL may skip certificate checks (its self-signed HTTPS)."""
    given = url or env.get("RERANKER_URL")
    try:
        local = local_endpoint(env)
    except ConfigError:
        if not given:
            raise  # the local stack is what we would talk to: its bad setting is the user's problem
        local = Endpoint("", None, verify=True)  # a given URL needs nothing from the local settings
    url = (given or local.url).rstrip("/")
    is_local = url == local.url
    if token is None:
        token = env.get("RERANKER_TOKEN") or (local.token if is_local else None)
    return Endpoint(url, token or None, verify=local.verify or not is_local)


def quiet_unverified(*verify: bool | str) -> None:
    """Not verifying our own stack's self-signed certificate is deliberate (see `resolve_endpoint`): urllib3's
    InsecureRequestWarning, which it prints for every new connection, would only bury the output."""
    if not all(verify):
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


@contextmanager
def hints(url: str) -> Iterator[None]:
    """A RerankerError from `url` raised again with what to do about it: start the stack, or pass the right token."""
    try:
        yield
    except RerankerError as exc:
        if exc.status is None:
            raise RerankerError(
                f"{exc.message} (is the stack running? `reranker serve`, or set --url / RERANKER_URL)"
            ) from exc
        if exc.status == 401:
            raise RerankerError(
                f"{url} refused the token: pass --token or set RERANKER_TOKEN "
                "(`reranker token --token-only` on the server prints it)",
                401,
                exc.body,
            ) from exc
        raise


# --- query ---------------------------------------------------------------------------------------
def cmd_query(args: argparse.Namespace) -> int:
    documents = read_documents(args.documents, args.file, sys.stdin.isatty())
    if not documents:
        print(
            "reranker query: no documents: give them as arguments, with --file FILE (one per line), or on stdin",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    from reranker_template.client.http import RerankerClient

    if args.serverless:
        check_serverless(args)
        client = RerankerClient.for_serverless(args.serverless, os.environ, timeout=args.timeout + args.wait)
        url = client.base_url
    else:
        endpoint = resolve_endpoint(args.url, args.token, os.environ)
        quiet_unverified(endpoint.verify)
        client = RerankerClient(
            endpoint.url, endpoint.token, verify=endpoint.verify, timeout=args.timeout, retry_for=args.wait
        )
        url = endpoint.url
    with client, hints(url):
        result = client.rerank(args.query, documents, top_n=args.top_n, instruction=args.instruction)
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
        return EXIT_OK
    from rich.table import Table

    table = Table(title=f"{result.model}: {args.query}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("document", overflow="fold")
    table.add_column("index", justify="right")
    for row in rows:
        table.add_row(str(row["rank"]), f"{row['score']:.6f}", str(row["document"] or ""), str(row["index"]))
    console().print(table)
    return EXIT_OK


# --- health --------------------------------------------------------------------------------------
def cmd_health(args: argparse.Namespace) -> int:
    """The answer is the output, not an error: unreachable and not ready are printed (exit 1), not raised."""
    from reranker_template.client.http import RerankerClient

    if args.serverless:
        check_serverless(args)
        return serverless_health(args.serverless, args.wait, args.json)
    endpoint = resolve_endpoint(args.url, None, os.environ)
    quiet_unverified(endpoint.verify)
    with RerankerClient(endpoint.url, None, verify=endpoint.verify) as client:
        try:
            health = client.wait_until_ready(args.wait) if args.wait else client.health()
        except RerankerError as exc:
            if args.json:
                state = "unreachable" if exc.status is None else "not ready"
                print(json.dumps({"url": endpoint.url, "status": state, "reason": exc.message}))
            else:
                print(exc.message if exc.status is None else f"{endpoint.url}: {exc.message}")
            return EXIT_FAILURE
    if args.json:
        print(
            json.dumps({"url": endpoint.url, "http_status": health.http_status, **health.body, "status": health.status})
        )
    else:
        detail = f" ({health.reason})" if health.reason and not health.ready else ""
        model = f", model {health.body['model']}" if health.body.get("model") else ""
        print(f"{endpoint.url}: {health.status}{detail}{model}")
    return EXIT_OK if health.ready else EXIT_FAILURE


def serverless_health(name: str, wait: float, as_json: bool) -> int:
    """A serverless endpoint is ready when one of its workers is (as Vast's autoscaler reports them)."""
    from reranker_template.vast import serverless
    from reranker_template.vast.api import make_client

    client = make_client(os.environ)
    endpoint = serverless.require_endpoint(client, name)
    deadline = time.monotonic() + wait
    while True:
        workers = serverless.endpoint_workers(client, int(endpoint["id"]))
        ready = [w for w in workers if serverless.worker_ready(w)]
        if ready or time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
    summary = serverless.workers_summary(workers)
    if as_json:
        print(json.dumps({"endpoint": name, "ready": bool(ready), "workers": workers}, default=str))
    else:
        print(f"serverless endpoint {name!r}: {'ready' if ready else 'not ready'} ({summary})")
    return EXIT_OK if ready else EXIT_FAILURE


def check_serverless(args: argparse.Namespace) -> None:
    if getattr(args, "url", None) or getattr(args, "token", None):
        raise UserError("--serverless goes through Vast's router with your Vast API key: drop --url and --token")


# --- bench ---------------------------------------------------------------------------------------
def parse_levels(raw: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected whole numbers separated by commas, like 1,8,32") from None
    if not levels or any(level < 1 for level in levels):
        raise argparse.ArgumentTypeError(f"{raw!r}: expected positive whole numbers separated by commas, like 1,8,32")
    return levels


def bench_table(report: dict[str, Any]) -> Table:
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


def bench_config(args: argparse.Namespace, env: Mapping[str, str]) -> BenchConfig:
    """The primary endpoint as resolved; --compare gets the same token unless --compare-token, and is
    verified unless it is the local stack's own self-signed HTTPS."""
    from reranker_template.client.bench import BenchConfig, Workload

    if args.serverless:
        check_serverless(args)
        if args.compare:
            raise UserError("--compare is for two URLs; bench a serverless endpoint on its own")
        return BenchConfig(
            url=f"serverless:{args.serverless}",
            serverless=args.serverless,
            token=None,
            workload=Workload(endpoint=args.endpoint, docs=args.docs, doc_tokens=args.doc_tokens),
            concurrency=args.concurrency,
            requests=args.requests,
            warmup=args.warmup,
            timeout=args.timeout,
            env=dict(env),
        )
    primary = resolve_endpoint(args.url, args.token, env)
    compare_url = args.compare.rstrip("/") if args.compare else None
    compare_token = args.compare_token if args.compare_token is not None else primary.token
    return BenchConfig(
        url=primary.url,
        token=primary.token,
        verify=primary.verify,
        workload=Workload(endpoint=args.endpoint, docs=args.docs, doc_tokens=args.doc_tokens),
        concurrency=args.concurrency,
        requests=args.requests,
        compare_url=compare_url,
        compare_token=compare_token,
        compare_verify=resolve_endpoint(compare_url, None, env).verify if compare_url else True,
        warmup=args.warmup,
        timeout=args.timeout,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from reranker_template.client.bench import run_bench, total_requests
    from reranker_template.client.http import RerankerClient

    config = bench_config(args, os.environ)
    quiet_unverified(config.verify, config.compare_verify)
    with hints(config.url):
        model: str | None = None  # a serverless worker serves one model: requests name none
        if not config.serverless:
            with RerankerClient(config.url, config.token, verify=config.verify, retry_for=0) as client:
                model = client.served_model()
        err = console(stderr=True)
        columns = (TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        show = err.is_terminal and not args.no_progress
        with Progress(*columns, console=err, disable=not show, transient=True) as progress:
            task = progress.add_task("requests", total=total_requests(config))
            report = run_bench(config, model, advance=lambda: progress.advance(task))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_bench(report)
    failed = any(row["errors"] or row["invalid"] for row in report["results"])
    return EXIT_FAILURE if failed else EXIT_OK


def print_bench(report: dict[str, Any]) -> None:
    out = console()
    cfg = report["config"]
    out.print(f"primary = {cfg['url']}" + (f", compare = {cfg['compare_url']}" if cfg["compare_url"] else ""))
    out.print(bench_table(report))
    for comp in report["comparisons"]:
        out.print(
            f"concurrency {comp['concurrency']}: compare / primary: req/s x{comp['requests_per_s_ratio']}, "
            f"p50 latency x{comp['latency_p50_ratio']} ({comp['latency_p50_delta_ms']} ms)"
        )
    for row in report["results"]:
        if row["first_problem"]:
            out.print(
                f"{row['url']} at concurrency {row['concurrency']}: first problem: {row['first_problem']}",
                style="yellow",
            )


# --- wiring --------------------------------------------------------------------------------------
def add_endpoint_flags(parser: argparse.ArgumentParser, token: bool = True) -> None:
    parser.add_argument(
        "--url",
        help="the endpoint (default: $RERANKER_URL, else the stack on this machine: http://127.0.0.1:$GATEWAY_PORT)",
    )
    parser.add_argument(
        "--serverless",
        metavar="NAME",
        help="a Vast Serverless endpoint by name, through Vast's router (VAST_API_KEY; see `reranker vast serverless`)",
    )
    if token:
        parser.add_argument("--token", help="the access token (default: $RERANKER_TOKEN, else the local stack's token)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    query.add_argument(
        "--timeout", type=positive_float, default=120.0, help="seconds to wait for the answer (default 120)"
    )
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
        "--timeout",
        type=positive_float,
        default=120.0,
        help="seconds per request before it counts as an error (default 120)",
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
