"""`reranker vast serverless up|status|scale|logs|down`: autoscaled worker groups on Vast Serverless.

Thin, like cli/vast.py: parsing, prompts and printing here; the API calls and defaults in
`reranker_template.vast.serverless`. Results on stdout (`--json` for scripts), progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from reranker_template.cli.common import console, positive_float, positive_int
from reranker_template.errors import EXIT_OK, EXIT_USAGE, UserError, VastError

GROUP_HELP = """\
Scale past one box: a Vast Serverless endpoint (one name for clients, with a scaling policy) and a
worker group that rents instances of our image for it. Vast's autoscaler starts and stops them with
the load; its router sends each request, signed, to a worker (our worker in the image, in front of
vLLM). Clients call the endpoint by name: `reranker query --serverless NAME`, or
RerankerClient.for_serverless(NAME, os.environ) in Python.

Idle cost: with the defaults (min load 0, 1 cold worker) an idle endpoint rents no GPU; the cold
worker is a stopped instance that keeps its disk (image and model) and bills for storage only.
"""

UP_HELP = """\
Create or update the endpoint NAME, its worker group and the group's template (our image, the worker
port 3000 published, MODEL_NAME set). Running it again with other options updates all three.

Defaults suit rerankers:
  --cold-workers 1     one stopped instance with the image and model on disk: a scale-up is a restart
                       (about a minute), not a pull and a download; it bills for storage only
  --max-workers 4      a bound on the bill while you learn the load (raise it with `scale`)
  --min-load 0         no always-on GPU: an idle endpoint costs storage only; set it (workload units/s,
                       about tokens/s) to keep capacity hot for the first query of the day
  --target-util 0.8    rerank calls come in bursts (one per search): 20% headroom absorbs a burst
                       while another worker starts
  --target-queue-time 5, --max-queue-time 30
                       a rerank sits in a search's path: add workers once requests wait seconds; a
                       worker refuses past 30 s and the client is routed to another
GPU memory and offers: from the model's size, with the same filters as `reranker vast search`.
"""

UP_EPILOG = """\
examples:
  reranker vast serverless up --endpoint search-rerank --model BAAI/bge-reranker-v2-m3
  reranker vast serverless up --endpoint search-rerank --model Qwen/Qwen3-Reranker-4B --max-price 0.6
  reranker vast serverless status search-rerank
  reranker query --serverless search-rerank "what is vLLM?" "vLLM serves models" "bananas are yellow"
"""


def _client() -> Any:
    from reranker_template.vast.api import make_client

    return make_client(os.environ)


def _emit(data: Any, lines: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        console().print("\n".join(lines), highlight=False)


def cmd_up(args: argparse.Namespace) -> int:
    from reranker_template.cli.vast import _offer_query
    from reranker_template.vast import serverless, template
    from reranker_template.vast.offers import mib_to_marketed_gb, mib_to_query_gb

    name = serverless.check_endpoint_name(args.endpoint)
    client = _client()  # no API key: say so before anything else
    query = _offer_query(args, os.environ, limit=10)
    policy = serverless.EndpointPolicy(
        cold_workers=args.cold_workers,
        max_workers=args.max_workers,
        min_load=args.min_load,
        target_util=args.target_util,
        target_queue_time=args.target_queue_time,
        max_queue_time=args.max_queue_time,
        inactivity_timeout=args.inactivity_timeout,
    )
    if policy.cold_workers > policy.max_workers:
        raise UserError(f"--cold-workers {policy.cold_workers} is more than --max-workers {policy.max_workers}")
    if args.bake and args.image:
        raise UserError("--bake IMAGE and --image IMAGE both name the image to run: give one")
    image = args.bake or args.image or serverless.DEFAULT_IMAGE
    spec = serverless.ServerlessSpec(
        name, args.model, query, policy, vllm_args=args.vllm_args or "", image=image, baked=bool(args.bake)
    )
    gpu_ram_gb = mib_to_query_gb(query.gpu_ram.min_mib)
    readme = template.readme_section(template.project_readme())
    print(f"creating/updating endpoint {name!r} for {args.model} ...", file=sys.stderr)
    result = serverless.serverless_up(client, spec, readme, gpu_ram_gb)
    lines = [
        f"{result.endpoint_action} endpoint {name!r} (id {result.endpoint_id}): cold workers {policy.cold_workers}, "
        f"max workers {policy.max_workers}, min load {policy.min_load:g}, target utilisation {policy.target_util:g}",
        f"{result.workergroup_action} worker group {result.workergroup_id}: template {result.template.hash_id}, "
        f"offers {query.describe()}; GPU memory {gpu_ram_gb:g} GB "
        f"(~{mib_to_marketed_gb(query.gpu_ram.min_mib):.1f} GiB)",
        *([f"image {image}: {args.model} baked in, so workers download nothing at start"] if args.bake else []),
        f"next: reranker vast serverless status {name}   (workers start as requests arrive)",
        f"      reranker query --serverless {name} QUERY DOC [DOC ...]",
    ]
    data = {
        "endpoint": name,
        "endpoint_id": result.endpoint_id,
        "workergroup_id": result.workergroup_id,
        "template_hash": result.template.hash_id,
        "policy": policy.fields(),
    }
    _emit(data, lines, args.json)
    return EXIT_OK


def worker_lines(workers: list[dict[str, Any]]) -> list[str]:
    if not workers:
        return ["no workers yet (they start when requests arrive, or up to --cold-workers stopped ones)"]
    lines = []
    for worker in workers:
        error = worker.get("error_msg") or worker.get("error")
        lines.append(
            f"  worker {worker.get('id')}: {worker.get('status', '?')}, load {float(worker.get('cur_load') or 0):g}, "
            f"measured {float(worker.get('measured_perf') or 0):.0f} units/s, "
            f"{int(worker.get('reqs_working') or 0)} working" + (f", ERROR: {error}" if error else "")
        )
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    from reranker_template.vast import serverless

    client = _client()
    endpoint = serverless.require_endpoint(client, args.endpoint)
    groups = serverless.endpoint_groups(client, int(endpoint["id"]))
    workers = serverless.endpoint_workers(client, int(endpoint["id"]))
    errors = [w for w in workers if w.get("error_msg") or str(w.get("status", "")).lower() == "error"]
    lines = [
        f"endpoint {endpoint['endpoint_name']!r} (id {endpoint['id']}): {endpoint.get('endpoint_state') or 'active'}, "
        f"cold workers {endpoint.get('cold_workers')}, max workers {endpoint.get('max_workers')}, "
        f"min load {endpoint.get('min_load')}",
        *[f"worker group {g['id']}: template {g.get('template_hash')}" for g in groups],
        f"{len(workers)} worker(s), {len(errors)} with errors:",
        *worker_lines(workers),
    ]
    _emit({"endpoint": endpoint, "workergroups": groups, "workers": workers}, lines, args.json)
    return EXIT_OK


def cmd_scale(args: argparse.Namespace) -> int:
    from reranker_template.vast import serverless

    changes = {
        "cold_workers": args.cold_workers,
        "max_workers": args.max_workers,
        "min_load": args.min_load,
        "target_util": args.target_util,
    }
    if all(value is None for value in changes.values()):
        raise UserError("say what to change: --cold-workers, --max-workers, --min-load or --target-util")
    client = _client()
    endpoint = serverless.require_endpoint(client, args.endpoint)
    merged = serverless.scale_endpoint(client, endpoint, changes)
    shown = ", ".join(f"{key} {value}" for key, value in merged.items() if value is not None)
    _emit(merged, [f"endpoint {args.endpoint!r}: {shown}"], args.json)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    from reranker_template.vast import serverless
    from reranker_template.vast.api import vast_call

    client = _client()
    endpoint = serverless.require_endpoint(client, args.endpoint)
    with vast_call("reading the endpoint's logs"):
        logs = client.get_endpt_logs(int(endpoint["id"]), level=args.level, tail=args.tail)
    if args.json:
        print(json.dumps(logs, indent=2))
        return EXIT_OK
    key = ("info0", "info1", "trace", "debug")[args.level]
    text = logs.get(key) if isinstance(logs, dict) else None
    print(text if text else f"(no {key} log lines for endpoint {args.endpoint!r})")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from reranker_template.cli.vast import _ask
    from reranker_template.vast import serverless

    client = _client()
    endpoint = serverless.require_endpoint(client, args.endpoint)
    if not args.yes:
        _ask(
            f"Delete endpoint {args.endpoint!r}, its worker groups, and destroy its instances?",
            "delete the endpoint",
            "nothing deleted",
        )
    result = serverless.serverless_down(client, endpoint)
    if result.left:
        raise VastError(
            f"endpoint {args.endpoint!r} deleted, but instance(s) {', '.join(map(str, result.left))} are still "
            "listed: destroy them with `reranker vast destroy ID` so they stop billing"
        )
    lines = [
        f"deleted endpoint {args.endpoint!r} and worker group(s) {', '.join(map(str, result.workergroups)) or 'none'}",
        f"destroyed instance(s): {', '.join(map(str, result.destroyed)) or 'none'}; none of its instances is left",
    ]
    _emit({"workergroups": result.workergroups, "destroyed": result.destroyed, "left": []}, lines, args.json)
    return EXIT_OK


def _policy_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    from reranker_template.vast.serverless import EndpointPolicy

    policy = EndpointPolicy()

    def default(value: Any) -> Any:
        return value if defaults else None

    shown = " (default: %(default)s)" if defaults else ""
    parser.add_argument(
        "--cold-workers",
        type=int,
        default=default(policy.cold_workers),
        metavar="N",
        help="stopped instances kept with image and model on disk, ready to start" + shown,
    )
    parser.add_argument(
        "--max-workers",
        type=positive_int,
        default=default(policy.max_workers),
        metavar="N",
        help="most instances at once: the bill's bound" + shown,
    )
    parser.add_argument(
        "--min-load",
        type=float,
        default=default(policy.min_load),
        metavar="UNITS_PER_S",
        help="capacity kept running even when idle, in workload units/s" + shown,
    )
    parser.add_argument(
        "--target-util",
        type=positive_float,
        default=default(policy.target_util),
        metavar="0..1",
        help="the share of the workers' capacity to use before adding one" + shown,
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser], model_default: str) -> None:
    """`serverless` and its commands, under `reranker vast`."""
    from reranker_template.cli.vast import _add_offer_filters

    formatter = argparse.RawDescriptionHelpFormatter
    group = commands.add_parser(
        "serverless", help="autoscaled worker groups behind one endpoint name", description=GROUP_HELP
    )
    group.formatter_class = formatter
    sub = group.add_subparsers(dest="serverless_command", metavar="COMMAND")

    def group_help(_args: argparse.Namespace) -> int:
        group.print_help()
        return EXIT_USAGE

    group.set_defaults(func=group_help)

    p = sub.add_parser("up", help="create or update endpoint, worker group and template", description=UP_HELP)
    p.formatter_class = formatter
    p.epilog = UP_EPILOG
    p.add_argument("--endpoint", required=True, metavar="NAME", help="the endpoint's name (what clients use)")
    _add_offer_filters(p, model_default)
    _policy_options(p, defaults=True)
    p.add_argument(
        "--target-queue-time",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="add workers once requests wait this long (default: %(default)g)",
    )
    p.add_argument(
        "--max-queue-time",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="a worker refuses (429, the client is routed elsewhere) past this wait (default: %(default)g)",
    )
    p.add_argument("--inactivity-timeout", type=float, metavar="SECONDS", help="Vast's idle timeout (default: Vast's)")
    p.add_argument("--vllm-args", metavar="ARGS", help="VLLM_ARGS for every worker")
    p.add_argument("--image", help="the image to run (default: our release image)")
    p.add_argument(
        "--bake",
        metavar="IMAGE",
        help="run IMAGE, built with the model baked in (docker build --build-arg MODEL_NAME=MODEL): workers "
        "download nothing at start (README: Bake a model into the image)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "status",
        help="the endpoint's workers, load and errors",
        description="The endpoint's policy, its worker groups, and each worker as Vast's autoscaler sees it: "
        "state, load, measured capacity (workload units/s), requests in progress, and its error if it has one.",
        epilog="examples:\n  reranker vast serverless status search-rerank\n"
        "  reranker vast serverless status search-rerank --json",
        formatter_class=formatter,
    )
    p.add_argument("endpoint", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "scale",
        help="change the endpoint's worker counts or load floor",
        description="Change some of the endpoint's scaling settings; the others keep their values. "
        "--min-load is in workload units per second (about tokens/s, see README 'Scale out').",
        epilog="examples:\n  reranker vast serverless scale search-rerank --max-workers 8\n"
        "  reranker vast serverless scale search-rerank --min-load 20000   # keep about one worker warm",
        formatter_class=formatter,
    )
    p.add_argument("endpoint", metavar="NAME")
    _policy_options(p, defaults=False)
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_scale)

    p = sub.add_parser(
        "logs",
        help="the autoscaler's log of the endpoint",
        description="What Vast's autoscaler logged about the endpoint (scaling decisions, workers' errors).",
        epilog="examples:\n  reranker vast serverless logs search-rerank --tail 50",
        formatter_class=formatter,
    )
    p.add_argument("endpoint", metavar="NAME")
    p.add_argument("--level", type=int, choices=range(4), default=1, help="0 info0, 1 info1, 2 trace, 3 debug")
    p.add_argument("--tail", type=positive_int, metavar="LINES")
    p.add_argument("--json", action="store_true", help="print the raw answer")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        "down",
        help="delete endpoint and worker groups, destroy their instances",
        description="Delete the endpoint's worker groups and the endpoint, destroy the endpoint's instances "
        "(deleting a worker group alone leaves them running, and billing), then check that none is left.",
        epilog="examples:\n  reranker vast serverless down search-rerank --yes",
        formatter_class=formatter,
    )
    p.add_argument("endpoint", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_down)
