"""`reranker vast ...`: the Vast.ai loop from a terminal (template, search, launch, list, status, destroy).

Thin: argument parsing, prompts and printing. The decisions and API calls live in `reranker_template.vast`,
what is shown in `vast.report`. Results go to stdout (tables, JSON, the endpoint); progress goes to
stderr. Errors are raised, never printed here: `UserError` (exit 2) for what the user can fix in the
command line, `VastError` (exit 1) for what Vast or the instance did; `cli.main` prints them as one line.

Importing this module (every `reranker` command does, to build the parser) loads neither the Vast SDK
nor requests nor rich: the `vast` modules import them only when a call is made or a table is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from reranker_template.cli import serverless
from reranker_template.cli.common import console, positive_float, positive_int
from reranker_template.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Failure, OfferGone, UserError
from reranker_template.settings import DEFAULT_MODEL
from reranker_template.vast import instances, offers, records, report, template
from reranker_template.vast.api import VastApi, make_client
from reranker_template.vast.instances import LaunchSpec
from reranker_template.vast.offers import DEFAULT_DISK_GB, Offer, OfferQuery
from reranker_template.vast.records import Record
from reranker_template.vast.wait import WaitOptions, probe_health, wait_until_ready

if TYPE_CHECKING:
    from rich.console import Console

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


def _confirm(question: str) -> bool:
    """Ask on stderr, read a line from stdin; anything but y/yes (or EOF) is no."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (OSError, ValueError):
        return False
    return answer.strip().lower() in ("y", "yes")


def _ask(question: str, action: str, refused: str) -> None:
    """Go on only on a yes: UserError when there is no terminal to ask on, Failure on a no."""
    if not sys.stdin.isatty():
        raise UserError(f"pass --yes to {action} without a prompt (stdin is not a terminal)")
    if not _confirm(question):
        raise Failure(refused)


def _print_lines(lines: list[str]) -> None:
    console().print("\n".join(lines))


def cmd_template(args: argparse.Namespace) -> int:
    body = template.template_body(template.readme_section(template.project_readme()))
    if args.write:
        Path(args.write).write_text(template.template_json(body))
        print(f"wrote {args.write}", file=sys.stderr)
        return EXIT_OK
    if args.dry_run:
        sys.stdout.write(template.template_json(body))
        return EXIT_OK
    published = template.publish_template(make_client(os.environ), body, public=args.public)
    hashed = f" (hash {published.hash_id})" if published.hash_id else ""
    lines = [f"{published.action} template {body['name']!r}{hashed}"]
    lines.append("find it under My Templates at https://cloud.vast.ai/templates/")
    if published.hash_id:
        lines.append(f"rent with it: vastai create instance OFFER_ID --template_hash {published.hash_id}")
    _print_lines(lines)
    return EXIT_OK


def _offer_query(args: argparse.Namespace, env: Mapping[str, str], limit: int) -> OfferQuery:
    if args.min_gpu_ram is not None:
        need = offers.gpu_ram_filter(None, args.min_gpu_ram)
    else:
        need = offers.gpu_ram_for_model(args.model, args.gpus, env)
    return OfferQuery(need, num_gpus=args.gpus, max_price=args.max_price, limit=limit, disk_gb=args.disk)


def cmd_search(args: argparse.Namespace) -> int:
    env = os.environ
    query = _offer_query(args, env, args.limit)
    found = offers.search_offers(make_client(env), query)
    if not found:
        raise query.no_match()
    if args.json:
        print(json.dumps([dataclasses.asdict(offer) for offer in found], indent=2))
        return EXIT_OK
    console(stderr=True).print(f"offers for {args.model}: {query.describe()}; cheapest first")
    console().print(report.offers_table(found))
    console(stderr=True).print(f"rent one: reranker vast launch OFFER_ID --model {args.model}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# launch
# --------------------------------------------------------------------------------------------------


def _launch_spec(args: argparse.Namespace, env: Mapping[str, str], err: Console) -> tuple[LaunchSpec, str | None]:
    """The checked spec (ConfigError before anything is rented) and where its SSH key came from (None: no sshd).

    The key: --ssh-key, else the first default key that exists, else one given with --env SSH_PUBLIC_KEY.
    """
    key_file = None
    if not args.no_ssh:
        key_file = Path(args.ssh_key).expanduser() if args.ssh_key else instances.default_public_key(env)
    spec = LaunchSpec(
        model=args.model,
        vllm_args=args.vllm_args or "",
        use_all_gpus=args.use_all_gpus,
        https=args.https,
        disk_gb=args.disk,
        label=args.label,
        extra_env=instances.parse_env_pairs(args.env or []),
        api_key=instances.new_api_key(),
        ssh_public_key=instances.read_public_key(key_file) if key_file else "",
    )
    spec.validate()
    if key_file:
        err.print(f"SSH: the instance will accept {key_file} (SSH_PUBLIC_KEY) for the tunnel to vLLM")
        return spec, str(key_file)
    if spec.env().get("SSH_PUBLIC_KEY"):
        return spec, "--env SSH_PUBLIC_KEY"
    if not args.no_ssh:
        names = ", ".join(f"~/.ssh/{name}" for name in instances.DEFAULT_PUBLIC_KEYS)
        err.print(f"SSH: no public key found ({names}): no SSH tunnel; pass --ssh-key FILE to have one")
    return spec, None


def _preflight(spec: LaunchSpec, env: Mapping[str, str], err: Console) -> None:
    """The instance's model checks, before anything is rented: a model that cannot start costs no money."""
    with err.status(f"checking {spec.model} before renting"):
        report = instances.preflight(spec, env)
    for line in report.lines():
        err.print(f"preflight: {line}", markup=False, highlight=False)
    report.raise_for_problem()


def _rent(
    client: VastApi, args: argparse.Namespace, env: Mapping[str, str], spec: LaunchSpec, err: Console
) -> tuple[int, Offer]:
    """Choose the offer (asking unless --yes) and create the instance. Returns (instance id, offer)."""
    if args.cheapest:
        query = _offer_query(args, env, limit=5)
        candidates = offers.search_offers(client, query)
        if not candidates:
            raise query.no_match()
    else:
        candidates = [offers.get_offer(client, args.offer_id, args.disk)]
    if not args.yes:
        _ask(f"Rent {candidates[0].summary()} with {spec.model}?", "rent", "not rented")
    renter = make_client(env, retry=1)  # never retry a create blindly (see instances.create_instance)
    last_error: OfferGone | None = None
    for offer in candidates[:3]:
        try:
            err.print(f"renting {offer.summary()}")
            return instances.create_instance(renter, offer.id, spec), offer
        except OfferGone as exc:
            if not args.cheapest:
                raise
            last_error = exc
            err.print(f"offer {offer.id} was just taken; trying the next cheapest")
    assert last_error is not None  # candidates is never empty
    raise last_error


def _print_created(args: argparse.Namespace, record: Record) -> None:
    """--no-wait: the id and the key, and how to follow the instance."""
    if args.json:
        fields = {"id": record.id, "offer_id": record.offer_id, "api_key": record.api_key, "model": record.model}
        print(json.dumps({**fields, "url": None}))
    else:
        follow = f"follow it with: reranker vast status {record.id}"
        _print_lines([f"instance {record.id}, API key {record.api_key}", follow])


def _interrupted(client: VastApi, instance_id: int, path: Path) -> int:
    """Ctrl-C while waiting: the instance bills on, so offer to destroy it."""
    print(f"\ninterrupted while instance {instance_id} was starting; it is billed until destroyed", file=sys.stderr)
    if _confirm(f"Destroy instance {instance_id} now?"):
        instances.destroy_instance(client, instance_id)
        records.drop_record(path, instance_id)
        print(f"destroyed instance {instance_id}", file=sys.stderr)
    else:
        print(
            f"instance {instance_id} keeps running: `reranker vast status {instance_id}`, "
            f"`reranker vast destroy {instance_id}`",
            file=sys.stderr,
        )
    return EXIT_INTERRUPTED


def cmd_launch(args: argparse.Namespace) -> int:
    if (args.offer_id is None) == (not args.cheapest):
        raise UserError("give an OFFER_ID (from `reranker vast search`) or --cheapest, not both")
    env = os.environ
    err = console(stderr=True)
    spec, ssh_key = _launch_spec(args, env, err)
    if not args.skip_preflight:
        _preflight(spec, env, err)
    path = records.records_path(env)
    # A broken records file fails now, not after renting, when the new instance's key could not be kept.
    records.load_records(path)
    client = make_client(env)
    instance_id, offer = _rent(client, args, env, spec, err)
    record = Record.launched(instance_id, offer, spec, ssh_key)
    records.put_record(path, record)  # before waiting: the key must survive a failed or interrupted wait
    err.print(f"created instance {instance_id}; its API key is recorded in {path}")
    if args.no_wait:
        _print_created(args, record)
        return EXIT_OK
    options = WaitOptions(timeout=args.timeout, poll_interval=args.poll_interval)
    try:
        with err.status(f"waiting for instance {instance_id} (Ctrl-C to stop waiting)"):
            ready = wait_until_ready(
                client, instance_id, spec.api_key, prefer_https=spec.https, options=options, report=err.print
            )
    except KeyboardInterrupt:
        return _interrupted(client, instance_id, path)
    tunnel = ready.instance.ssh_tunnel() if ssh_key else None
    record = dataclasses.replace(record, url=ready.base_url, ssh_tunnel=tunnel)
    records.put_record(path, record)
    if args.json:
        print(json.dumps(report.ready_json(record, ready), indent=2))
    else:
        _print_lines(report.ready_lines(record, ready))
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# list, status, destroy
# --------------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    env = os.environ
    client = make_client(env)
    recorded = records.load_records(records.records_path(env))
    views = instances.list_instances(client)
    rows = [report.instance_row(view, recorded.get(view.id)) for view in views]
    gone = sorted(set(recorded) - {view.id for view in views})
    if args.json:
        print(json.dumps({"instances": rows, "recorded_but_gone": gone}, indent=2))
        return EXIT_OK
    if rows:
        console().print(report.instances_table(rows))
    else:
        console(stderr=True).print("no instances on your account")
    if gone:
        ids = ", ".join(map(str, gone))
        console(stderr=True).print(f"recorded but no longer on your account (destroyed elsewhere?): {ids}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    env = os.environ
    client = make_client(env)
    path = records.records_path(env)
    record = records.load_records(path).get(args.instance_id)
    view = instances.show_instance(client, args.instance_id)
    health = None
    if view.status == "running" and view.public_ip and view.gateway_port:
        https_first = record is not None and (record.url or "").startswith("https")
        schemes = ("https", "http") if https_first else ("http", "https")
        health = probe_health(view.public_ip, view.gateway_port, record.api_key if record else "", schemes)
    row = report.instance_row(view, record)
    row["health"] = health.state if health else None
    if health and health.reachable:
        row["url"] = f"{health.scheme}://{view.public_ip}:{view.gateway_port}"
        if record and (record.url, record.ssh_tunnel) != (row["url"], row["ssh_tunnel"]):
            # Launched with --no-wait, or the instance moved: keep the record's endpoint current.
            records.put_record(path, dataclasses.replace(record, url=row["url"], ssh_tunnel=row["ssh_tunnel"]))
    if args.json:
        if args.show_key and record:
            row["api_key"] = record.api_key
        print(json.dumps(row, indent=2))
    else:
        _print_lines(report.status_lines(view, record, row, health, args.show_key))
    return EXIT_OK


def cmd_destroy(args: argparse.Namespace) -> int:
    env = os.environ
    client = make_client(env)
    if not args.yes:
        _ask(f"Destroy instance {args.instance_id}? Its disk is deleted too.", "destroy", "not destroyed")
    instances.destroy_instance(client, args.instance_id)
    records.drop_record(records.records_path(env), args.instance_id)
    console(stderr=True).print(f"destroyed instance {args.instance_id}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------------
# wiring
# --------------------------------------------------------------------------------------------------


def _add_offer_filters(parser: argparse.ArgumentParser, model_default: str) -> None:
    parser.add_argument(
        "--model",
        default=model_default,
        help="the reranker (hub id); sizes the per-GPU memory filter (default: MODEL_NAME or %(default)s)",
    )
    parser.add_argument("--gpus", type=positive_int, default=1, help="GPUs per offer (default: 1)")
    parser.add_argument("--max-price", type=positive_float, metavar="USD_PER_HOUR", help="highest total price per hour")
    parser.add_argument(
        "--min-gpu-ram",
        type=positive_float,
        metavar="GB",
        help="per-GPU memory instead of the model-derived one, as cards are sold (24: a 24 GB card)",
    )
    parser.add_argument(
        "--disk",
        type=positive_float,
        default=DEFAULT_DISK_GB,
        metavar="GB",
        help="disk to rent (default: %(default)g GB)",
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    model_default = (os.environ.get("MODEL_NAME") or DEFAULT_MODEL).strip()
    group = subparsers.add_parser(
        "vast", help=GROUP_HELP, description=GROUP_HELP + ".", epilog=GROUP_EPILOG, formatter_class=formatter
    )
    commands = group.add_subparsers(dest="vast_command", metavar="COMMAND")

    def group_help(_args: argparse.Namespace) -> int:
        group.print_help()
        return EXIT_USAGE

    group.set_defaults(func=group_help)

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
    p.set_defaults(func=cmd_template)

    p = commands.add_parser(
        "search",
        help="find offers that fit the model, cheapest first",
        formatter_class=formatter,
        description=_wrap(
            "Offers that fit the model: per-GPU memory from its size, compute capability >= 7.5, verified, "
            "rentable, static IP, a direct port, reliability >= 0.95; cheapest first."
        ),
        epilog="examples:\n  reranker vast search\n"
        "  reranker vast search --model Qwen/Qwen3-Reranker-4B --max-price 0.5\n"
        "  reranker vast search --gpus 2 --min-gpu-ram 24 --json\n",
    )
    _add_offer_filters(p, model_default)
    p.add_argument("--limit", type=positive_int, default=10, help="how many offers (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the offers as JSON")
    p.set_defaults(func=cmd_search)

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
    p.add_argument(
        "--skip-preflight",
        action="store_true",
        help="rent without checking the model first (hub access, architecture, tokenizer, disk size)",
    )
    p.add_argument("--yes", "-y", action="store_true", help="rent without asking")
    p.add_argument("--no-wait", action="store_true", help="return once the instance is created")
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=WaitOptions.timeout,
        metavar="SECONDS",
        help="how long to wait for ready (default: %(default)g)",
    )
    p.add_argument(
        "--poll-interval",
        type=positive_float,
        default=WaitOptions.poll_interval,
        metavar="SECONDS",
        help="seconds between checks (default: %(default)g)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_launch)

    p = commands.add_parser(
        "list",
        help="your instances, with the endpoints launched from here",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast list\n  reranker vast list --json\n",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser(
        "status",
        help="one instance: status, /health, endpoint, SSH tunnel",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast status 12345678\n  reranker vast status 12345678 --show-key --json\n",
    )
    p.add_argument("instance_id", type=int, metavar="ID")
    p.add_argument("--show-key", action="store_true", help="print the recorded API key")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=cmd_status)

    p = commands.add_parser(
        "destroy",
        help="destroy an instance (stops billing, deletes its disk)",
        formatter_class=formatter,
        epilog="examples:\n  reranker vast destroy 12345678\n  reranker vast destroy 12345678 --yes\n",
    )
    p.add_argument("instance_id", type=int, metavar="ID")
    p.add_argument("--yes", "-y", action="store_true", help="destroy without asking")
    p.set_defaults(func=cmd_destroy)
    serverless.register(commands, model_default)
