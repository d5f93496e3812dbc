"""`reranker vast ...`: the Vast.ai loop from a terminal (template, search, launch, list, status, destroy).

Thin: argument parsing, prompts and rendering. The decisions and API calls live in `vast.py`.
Results go to stdout (tables, JSON, the endpoint); progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from reranker_template import vast
from reranker_template.facts.model import inspect_model
from reranker_template.plan.layout import required_gpu_memory_gib, valid_tp_sizes
from reranker_template.settings import DEFAULT_MODEL, is_local_path

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

GROUP_HELP = "rent a GPU on Vast.ai and serve a reranker there"
GROUP_EPILOG = """\
examples:
  export VAST_API_KEY=...                               # from https://cloud.vast.ai/manage-keys/
  reranker vast search --model BAAI/bge-reranker-v2-m3  # cheapest matching offers
  reranker vast launch --cheapest --model BAAI/bge-reranker-v2-m3
  reranker vast list                                    # your instances and their endpoints
  reranker vast destroy 12345678                        # stop paying for it
  reranker vast template                                # create/update the template in your account

VAST_URL sets the API base URL; the API key comes from VAST_API_KEY or the vastai CLI's key file.
Launched instances (endpoint, API key) are recorded in ~/.config/reranker/instances.json (mode 0600).
"""


def _console(stderr: bool) -> Console:
    """Plain text (Vast's messages may contain [brackets]); piped output keeps whole lines and rows
    (rich would otherwise squeeze them into 80 columns)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 240
    return Console(stderr=stderr, highlight=False, markup=False, emoji=False, soft_wrap=True, width=width)


def _err() -> Console:
    return _console(stderr=True)


def _out() -> Console:
    return _console(stderr=False)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"reranker vast: {message}", file=sys.stderr)
    return code


def _env() -> Mapping[str, str]:
    return os.environ


def _default_model(env: Mapping[str, str]) -> str:
    return (env.get("MODEL_NAME") or DEFAULT_MODEL).strip()


def _confirm(question: str) -> bool:
    """Ask on stderr, read a line from stdin; anything but y/yes (or EOF) is no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------------


def cmd_template(args: argparse.Namespace) -> int:
    body = vast.template_body(vast.readme_section(vast.project_readme()))
    if args.write:
        Path(args.write).write_text(vast.template_json(body))
        print(f"wrote {args.write}", file=sys.stderr)
        return EXIT_OK
    if args.dry_run:
        sys.stdout.write(vast.template_json(body))
        return EXIT_OK
    client = vast.make_client(_env())
    published = vast.publish_template(client, body, public=args.public)
    _out().print(
        f"{published.action} template {body['name']!r}"
        + (f" (hash {published.hash_id})" if published.hash_id else "")
        + "\nfind it under My Templates at https://cloud.vast.ai/templates/"
        + (
            f"\nrent with it: vastai create instance OFFER_ID --template_hash {published.hash_id}"
            if published.hash_id
            else ""
        )
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------------


def _memory_need(args: argparse.Namespace, env: Mapping[str, str]) -> vast.MemoryNeed:
    if args.min_gpu_ram is not None:
        return vast.min_gpu_ram(None, args.min_gpu_ram)
    info = inspect_model(args.model, is_local=is_local_path(args.model), token=env.get("HF_TOKEN"), env=env)
    # On N GPUs a model too big for one runs tensor parallel: each GPU then needs only its share.
    tp = max(valid_tp_sizes(info, args.gpus))
    return vast.min_gpu_ram(required_gpu_memory_gib(info, tensor_parallel_size=tp), None)


def _offer_query(
    args: argparse.Namespace, env: Mapping[str, str], limit: int
) -> tuple[vast.OfferQuery, vast.MemoryNeed]:
    need = _memory_need(args, env)
    query = vast.OfferQuery(
        gpu_ram_mb=need.gpu_ram_mb, num_gpus=args.gpus, max_price=args.max_price, limit=limit, disk_gb=args.disk
    )
    return query, need


def _describe_filters(query: vast.OfferQuery, need: vast.MemoryNeed) -> str:
    price = f", at most ${query.max_price:g}/h" if query.max_price is not None else ""
    gpus = "1 GPU" if query.num_gpus == 1 else f"{query.num_gpus} GPUs"
    return (
        f"{gpus} with >= {query.gpu_ram_mb / 1000:.1f} GB each ({need.reason}), compute capability >= "
        f"{vast.MIN_COMPUTE_CAP / 100:.1f}, reliability >= {vast.MIN_RELIABILITY}, verified, static IP, a direct port{price}"
    )


def _no_match(query: vast.OfferQuery, need: vast.MemoryNeed) -> str:
    return f"no offer matches: {_describe_filters(query, need)}; loosen --max-price or --min-gpu-ram, or change --gpus"


def _offers_table(offers: list[vast.Offer]) -> Table:
    table = Table(title=None, show_edge=False)
    for column, justify in (
        ("GPU", "left"),
        ("count", "right"),
        ("VRAM/GPU", "right"),
        ("$/h", "right"),
        ("reliability", "right"),
        ("location", "left"),
        ("offer id", "right"),
    ):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for offer in offers:
        table.add_row(
            offer.gpu_name,
            str(offer.num_gpus),
            f"{offer.gpu_ram_gb:.0f} GB",
            f"{offer.dph_total:.3f}",
            f"{offer.reliability:.3f}",
            offer.location,
            str(offer.id),
        )
    return table


def cmd_search(args: argparse.Namespace) -> int:
    env = _env()
    query, need = _offer_query(args, env, args.limit)
    client = vast.make_client(env)
    offers = vast.search_offers(client, query)
    if not offers:
        return _fail(_no_match(query, need))
    if args.json:
        print(json.dumps([dataclasses.asdict(offer) for offer in offers], indent=2))
        return EXIT_OK
    _err().print(f"offers for {args.model}: {_describe_filters(query, need)}; cheapest first")
    _out().print(_offers_table(offers))
    _err().print(f"rent one: reranker vast launch OFFER_ID --model {args.model}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# launch
# --------------------------------------------------------------------------------------------------


def _public_key(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Path | None, str]:
    """(file, key) for SSH_PUBLIC_KEY: --ssh-key, else the first default key that exists, else none."""
    if args.no_ssh:
        return None, ""
    path = Path(args.ssh_key).expanduser() if args.ssh_key else vast.default_public_key(env)
    return (path, vast.read_public_key(path)) if path else (None, "")


def _spec(args: argparse.Namespace, ssh_public_key: str = "") -> vast.LaunchSpec:
    spec = vast.LaunchSpec(
        model=args.model,
        vllm_args=args.vllm_args or "",
        use_all_gpus=args.use_all_gpus,
        https=args.https,
        disk_gb=args.disk,
        label=args.label,
        extra_env=vast.parse_env_pairs(args.env or []),
        api_key=vast.new_api_key(),
        ssh_public_key=ssh_public_key,
    )
    spec.validate()
    return spec


def _rent(
    client: Any, args: argparse.Namespace, env: Mapping[str, str], spec: vast.LaunchSpec, err: Console
) -> tuple[int, vast.Offer]:
    """Choose the offer (asking unless --yes) and create the instance. Returns (instance id, offer)."""
    if args.cheapest:
        query, need = _offer_query(args, env, limit=5)
        candidates = vast.search_offers(client, query)
        if not candidates:
            raise vast.VastError(_no_match(query, need))
    else:
        candidates = [vast.get_offer(client, args.offer_id, args.disk)]
    if not args.yes:
        if not sys.stdin.isatty():
            raise _Usage("pass --yes to rent without a prompt (stdin is not a terminal)")
        if not _confirm(f"Rent {candidates[0].summary()} with {spec.model}?"):
            raise _Declined()
    renter = vast.make_client(env, retry=1)  # never retry a create blindly (see vast.create_instance)
    last_error: vast.VastError | None = None
    for offer in candidates[:3]:
        try:
            err.print(f"renting {offer.summary()}")
            return vast.create_instance(renter, offer.id, spec), offer
        except vast.OfferGone as exc:
            last_error = exc
            if not args.cheapest:
                raise
            err.print(f"offer {offer.id} was just taken; trying the next cheapest")
    assert last_error is not None
    raise last_error


class _Usage(Exception):
    pass


class _Declined(Exception):
    pass


def _print_ready(out: Console, record: vast.Record, ready: vast.Ready) -> None:
    view = ready.instance
    out.print(
        f"Ready: instance {view.id} ({view.num_gpus}x {view.gpu_name or record.gpu}, ${view.dph_total or record.dph_total:.3f}/h)"
    )
    out.print(f"  endpoint:   {ready.base_url}")
    out.print(f"  API key:    {record.api_key}")
    out.print(f"  model:      {record.model}")
    out.print(f"  try it:     {vast.curl_example(ready.base_url, record.api_key, record.model)}")
    if record.ssh_tunnel:
        out.print(
            f"  SSH tunnel: {record.ssh_tunnel}   (then vLLM itself at http://localhost:{vast.VLLM_PORT}, no token)"
        )
    elif not record.ssh_key:
        out.print("  SSH tunnel: none (launched without a public key: --ssh-key FILE)")
    else:
        out.print(f"  SSH tunnel: Vast shows no port for 22/tcp yet; try `reranker vast status {view.id}`")
    out.print(f"  stop paying: reranker vast destroy {view.id}")


def cmd_launch(args: argparse.Namespace) -> int:
    if (args.offer_id is None) == (not args.cheapest):
        return _fail("give an OFFER_ID (from `reranker vast search`) or --cheapest, not both", EXIT_USAGE)
    env = _env()
    err, out = _err(), _out()
    key_file, public_key = _public_key(args, env)
    spec = _spec(args, public_key)
    ssh_key = str(key_file) if key_file else ("--env SSH_PUBLIC_KEY" if spec.env().get("SSH_PUBLIC_KEY") else None)
    if key_file:
        err.print(f"SSH: the instance will accept {key_file} (SSH_PUBLIC_KEY) for the tunnel to vLLM")
    elif not ssh_key and not args.no_ssh:
        names = ", ".join(f"~/.ssh/{name}" for name in vast.DEFAULT_PUBLIC_KEYS)
        err.print(f"SSH: no public key found ({names}): no SSH tunnel; pass --ssh-key FILE to have one")
    client = vast.make_client(env)
    try:
        instance_id, offer = _rent(client, args, env, spec, err)
    except _Usage as exc:
        return _fail(str(exc), EXIT_USAGE)
    except _Declined:
        return _fail("not rented", EXIT_FAILED)
    path = vast.records_path(env)
    record = vast.Record(
        id=instance_id,
        offer_id=offer.id,
        model=spec.model,
        api_key=spec.api_key,
        label=spec.label,
        gpu=f"{offer.num_gpus}x {offer.gpu_name}",
        dph_total=offer.dph_total,
        created_at=time.time(),
        ssh_key=ssh_key,
    )
    vast.put_record(path, record)  # before waiting: the key must survive a failed or interrupted wait
    err.print(f"created instance {instance_id}; its API key is recorded in {path}")
    if args.no_wait:
        if args.json:
            print(
                json.dumps(
                    {"id": instance_id, "offer_id": offer.id, "api_key": spec.api_key, "model": spec.model, "url": None}
                )
            )
        else:
            out.print(
                f"instance {instance_id}, API key {spec.api_key}\nfollow it with: reranker vast status {instance_id}"
            )
        return EXIT_OK
    options = vast.WaitOptions(timeout=args.timeout, poll_interval=args.poll_interval)
    try:
        with err.status(f"waiting for instance {instance_id} (Ctrl-C to stop waiting)"):
            ready = vast.wait_until_ready(
                client, instance_id, spec.api_key, prefer_https=spec.https, options=options, report=err.print
            )
    except KeyboardInterrupt:
        return _interrupted(client, instance_id, path)
    except vast.InstanceFailed as exc:
        return _fail(str(exc))
    record = dataclasses.replace(
        record, url=ready.base_url, ssh_tunnel=ready.instance.ssh_tunnel() if ssh_key else None
    )
    vast.put_record(path, record)
    if args.json:
        print(
            json.dumps(
                {
                    "id": instance_id,
                    "offer_id": offer.id,
                    "url": ready.base_url,
                    "api_key": spec.api_key,
                    "model": spec.model,
                    "ssh_tunnel": record.ssh_tunnel,
                    "curl": vast.curl_example(ready.base_url, spec.api_key, spec.model),
                },
                indent=2,
            )
        )
    else:
        _print_ready(out, record, ready)
    return EXIT_OK


def _interrupted(client: Any, instance_id: int, path: Path) -> int:
    print(f"\ninterrupted while instance {instance_id} was starting; it is billed until destroyed", file=sys.stderr)
    if _confirm(f"Destroy instance {instance_id} now?"):
        vast.destroy_instance(client, instance_id)
        vast.drop_record(path, instance_id)
        print(f"destroyed instance {instance_id}", file=sys.stderr)
    else:
        print(
            f"instance {instance_id} keeps running: `reranker vast status {instance_id}`, "
            f"`reranker vast destroy {instance_id}`",
            file=sys.stderr,
        )
    return EXIT_INTERRUPTED


# --------------------------------------------------------------------------------------------------
# list, status, destroy
# --------------------------------------------------------------------------------------------------


def _tunnel(view: vast.InstanceView, record: vast.Record | None) -> str | None:
    """The tunnel command, unless we launched this instance without a key (then it runs no sshd)."""
    if record is not None and not record.ssh_key:
        return None
    return view.ssh_tunnel()


def _row(view: vast.InstanceView, record: vast.Record | None) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "status_msg": view.status_msg,
        "gpu": f"{view.num_gpus}x {view.gpu_name}",
        "dph_total": view.dph_total,
        "label": view.label,
        "model": record.model if record else None,
        "url": (record.url if record and record.url else view.base_url()),
        "ssh_tunnel": _tunnel(view, record),
        "recorded": record is not None,
    }


def cmd_list(args: argparse.Namespace) -> int:
    env = _env()
    client = vast.make_client(env)
    records = vast.load_records(vast.records_path(env))
    views = vast.list_instances(client)
    rows = [_row(view, records.get(view.id)) for view in views]
    gone = sorted(set(records) - {view.id for view in views})
    if args.json:
        print(json.dumps({"instances": rows, "recorded_but_gone": gone}, indent=2))
        return EXIT_OK
    if not rows:
        _err().print("no instances on your account")
    else:
        table = Table(show_edge=False)
        for column in ("id", "status", "GPU", "$/h", "label", "model", "endpoint"):
            table.add_column(column, no_wrap=True)
        for row in rows:
            table.add_row(
                str(row["id"]),
                row["status"],
                row["gpu"],
                f"{row['dph_total']:.3f}",
                row["label"] or "",
                row["model"] or "",
                row["url"] or "",
            )
        _out().print(table)
    if gone:
        _err().print(f"recorded but no longer on your account (destroyed elsewhere?): {', '.join(map(str, gone))}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    env = _env()
    client = vast.make_client(env)
    record = vast.load_records(vast.records_path(env)).get(args.instance_id)
    view = vast.show_instance(client, args.instance_id)
    health = None
    if view.status == "running" and view.public_ip and view.gateway_port:
        schemes = ("https", "http") if record and record.url and record.url.startswith("https") else ("http", "https")
        health = vast.probe_health(view.public_ip, view.gateway_port, record.api_key if record else "", schemes)
    row = _row(view, record)
    row["health"] = health.state if health else None
    if health and health.state != "unreachable":
        row["url"] = f"{health.scheme}://{view.public_ip}:{view.gateway_port}"
        if record and (record.url, record.ssh_tunnel) != (row["url"], row["ssh_tunnel"]):
            # Launched with --no-wait, or the instance moved: keep the record's endpoint current.
            vast.put_record(
                vast.records_path(env), dataclasses.replace(record, url=row["url"], ssh_tunnel=row["ssh_tunnel"])
            )
    if args.json:
        if args.show_key and record:
            row["api_key"] = record.api_key
        print(json.dumps(row, indent=2))
        return EXIT_OK
    out = _out()
    out.print(f"instance {view.id}: {view.status}" + (f" ({view.status_msg})" if view.status_msg else ""))
    out.print(f"  GPU: {row['gpu']}, ${view.dph_total:.3f}/h" + (f", label {view.label}" if view.label else ""))
    if health:
        out.print(f"  {health.describe()}")
    if row["url"]:
        out.print(f"  endpoint: {row['url']}")
    if record:
        out.print(f"  model: {record.model}")
        out.print(f"  API key: {record.api_key if args.show_key else '(recorded; --show-key prints it)'}")
    else:
        out.print("  not launched from this machine: the API key is whatever API_KEYS/OPEN_BUTTON_TOKEN it was given")
    if row["ssh_tunnel"]:
        needs_key = "" if record else "   (if the instance was given SSH_PUBLIC_KEY)"
        out.print(f"  SSH tunnel: {row['ssh_tunnel']}{needs_key}")
    elif record and not record.ssh_key:
        out.print("  SSH tunnel: none (launched without a public key)")
    if view.status in vast.FAILED_STATUSES:
        out.print(f"  {vast.logs_hint(view.id)}")
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    env = _env()
    client = vast.make_client(env)
    if not args.yes:
        if not sys.stdin.isatty():
            return _fail("pass --yes to destroy without a prompt (stdin is not a terminal)", EXIT_USAGE)
        if not _confirm(f"Destroy instance {args.instance_id}? Its disk is deleted too."):
            return _fail("not destroyed")
    vast.destroy_instance(client, args.instance_id)
    vast.drop_record(vast.records_path(env), args.instance_id)
    _err().print(f"destroyed instance {args.instance_id}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# wiring
# --------------------------------------------------------------------------------------------------


def _guarded(func: Any) -> Any:
    """VastError -> one line on stderr and exit 1 (user mistakes elsewhere raise ConfigError: exit 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except vast.VastError as exc:
            return _fail(str(exc))

    return run


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive number")
    return value


def _add_offer_filters(parser: argparse.ArgumentParser, model_default: str) -> None:
    parser.add_argument(
        "--model",
        default=model_default,
        help="the reranker (hub id); sizes the per-GPU memory filter (default: MODEL_NAME or %(default)s)",
    )
    parser.add_argument("--gpus", type=_positive_int, default=1, help="GPUs per offer (default: 1)")
    parser.add_argument(
        "--max-price", type=_positive_float, metavar="USD_PER_HOUR", help="highest total price per hour"
    )
    parser.add_argument(
        "--min-gpu-ram", type=_positive_float, metavar="GB", help="per-GPU memory instead of the model-derived one"
    )
    parser.add_argument(
        "--disk",
        type=_positive_float,
        default=vast.DEFAULT_DISK_GB,
        metavar="GB",
        help="disk to rent (default: %(default)g GB)",
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100)


def register(subparsers: argparse._SubParsersAction) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    model_default = _default_model(os.environ)
    group = subparsers.add_parser(
        "vast", help=GROUP_HELP, description=GROUP_HELP + ".", epilog=GROUP_EPILOG, formatter_class=formatter
    )
    commands = group.add_subparsers(dest="vast_command", metavar="COMMAND")
    group.set_defaults(func=lambda _args: (group.print_help(), EXIT_USAGE)[1])

    p = commands.add_parser(
        "template",
        help="create or update the Vast template in your account",
        formatter_class=formatter,
        description=_wrap(
            "Create the template (image, port 8000, Open button, settings, readme, offer filters) in your "
            "Vast account, or update your existing one with the same name."
        ),
        epilog="examples:\n  reranker vast template --dry-run          # the template body as JSON, no API call\n"
        "  reranker vast template --write template.json   # regenerate the repo's template.json\n"
        "  reranker vast template --public           # publish it for everyone\n",
    )
    p.add_argument("--dry-run", action="store_true", help="print the template body (JSON) and stop")
    p.add_argument("--write", metavar="FILE", help="write the template body to FILE and stop")
    p.add_argument("--public", action="store_true", help="make the template public (default: private)")
    p.set_defaults(func=_guarded(cmd_template))

    p = commands.add_parser(
        "search",
        help="find offers that fit the model, cheapest first",
        formatter_class=formatter,
        description=_wrap(
            "Offers that fit the model: per-GPU memory from its size, compute capability >= 7.5, verified, "
            "rentable, static IP, a direct port, reliability >= 0.95; cheapest first."
        ),
        epilog="examples:\n  reranker vast search\n  reranker vast search --model Qwen/Qwen3-Reranker-4B --max-price 0.5\n"
        "  reranker vast search --gpus 2 --min-gpu-ram 24 --json\n",
    )
    _add_offer_filters(p, model_default)
    p.add_argument("--limit", type=_positive_int, default=10, help="how many offers (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the offers as JSON")
    p.set_defaults(func=_guarded(cmd_search))

    p = commands.add_parser(
        "launch",
        help="rent an offer, wait until the endpoint is ready, print URL and key",
        formatter_class=formatter,
        description=_wrap(
            "Rent an offer with our image and a freshly generated API key, wait until the instance runs and "
            "its /health says ready, then print the endpoint, the key, a curl example and the SSH tunnel. "
            "The tunnel needs your public key (--ssh-key, default ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub): "
            "the image then runs its own sshd. Ctrl-C while waiting asks whether to destroy the instance."
        ),
        epilog="examples:\n  reranker vast launch --cheapest\n"
        "  reranker vast launch 1234567 --model BAAI/bge-reranker-v2-m3 --yes\n"
        "  reranker vast launch --cheapest --max-price 0.4 --env HF_TOKEN=$HF_TOKEN --json --yes\n"
        "  reranker vast launch --cheapest --ssh-key ~/.ssh/work_ed25519.pub\n",
    )
    p.add_argument("offer_id", nargs="?", type=int, metavar="OFFER_ID", help="an offer id from `reranker vast search`")
    p.add_argument("--cheapest", action="store_true", help="rent the cheapest offer that matches the filters")
    _add_offer_filters(p, model_default)
    p.add_argument(
        "--vllm-args",
        default="",
        metavar="ARGS",
        help="extra vLLM arguments (VLLM_ARGS), e.g. --vllm-args='--max-model-len 8192' (keep the =)",
    )
    p.add_argument(
        "--no-use-all-gpus",
        dest="use_all_gpus",
        action="store_false",
        help="serve on one GPU only (USE_ALL_GPUS=false)",
    )
    p.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="more environment for the instance (repeatable), e.g. HF_TOKEN=...",
    )
    p.add_argument(
        "--https", action="store_true", help="serve HTTPS with Vast's instance certificate (ENABLE_HTTPS=true)"
    )
    ssh = p.add_mutually_exclusive_group()
    ssh.add_argument(
        "--ssh-key",
        metavar="FILE",
        help="public key for the SSH tunnel, sent as SSH_PUBLIC_KEY "
        "(default: the first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub)",
    )
    ssh.add_argument("--no-ssh", action="store_true", help="no SSH server on the instance")
    p.add_argument("--label", help="a label for the instance")
    p.add_argument("--yes", "-y", action="store_true", help="rent without asking")
    p.add_argument("--no-wait", action="store_true", help="return once the instance is created")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=vast.WaitOptions.timeout,
        metavar="SECONDS",
        help="how long to wait for ready (default: %(default)g)",
    )
    p.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=vast.WaitOptions.poll_interval,
        metavar="SECONDS",
        help="seconds between checks (default: %(default)g)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_guarded(cmd_launch))

    p = commands.add_parser(
        "list",
        help="your instances, with the endpoints launched from here",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast list\n  reranker vast list --json\n",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_guarded(cmd_list))

    p = commands.add_parser(
        "status",
        help="one instance: status, /health, endpoint, SSH tunnel",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast status 12345678\n  reranker vast status 12345678 --show-key --json\n",
    )
    p.add_argument("instance_id", type=int, metavar="ID")
    p.add_argument("--show-key", action="store_true", help="print the recorded API key")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=_guarded(cmd_status))

    p = commands.add_parser(
        "destroy",
        help="destroy an instance (stops billing, deletes its disk)",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast destroy 12345678\n  reranker vast destroy 12345678 --yes\n",
    )
    p.add_argument("instance_id", type=int, metavar="ID")
    p.add_argument("--yes", "-y", action="store_true", help="destroy without asking")
    p.set_defaults(func=_guarded(cmd_destroy))
