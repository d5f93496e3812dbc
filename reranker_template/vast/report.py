"""What `reranker vast` shows: the offer and instance tables, `--json` rows, the ready and status summaries.

Pure: each function returns text, rows or a table and prints nothing, so the commands stay thin. rich
is imported only when a table is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reranker_template.vast.instances import FAILED_STATUSES, VLLM_PORT, InstanceView, logs_hint
from reranker_template.vast.offers import Offer
from reranker_template.vast.records import Record
from reranker_template.vast.wait import HealthProbe, Ready, curl_example

if TYPE_CHECKING:
    from rich.console import JustifyMethod
    from rich.table import Table

OFFER_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("GPU", "left"),
    ("count", "right"),
    ("VRAM/GPU", "right"),
    ("$/h", "right"),
    ("reliability", "right"),
    ("location", "left"),
    ("offer id", "right"),
)
INSTANCE_COLUMNS = ("id", "status", "GPU", "$/h", "label", "model", "endpoint")


def offers_table(offers: list[Offer]) -> Table:
    from rich.table import Table

    table = Table(title=None, show_edge=False)
    for column, justify in OFFER_COLUMNS:
        table.add_column(column, justify=justify, no_wrap=True)
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


def tunnel(view: InstanceView, record: Record | None) -> str | None:
    """The tunnel command, unless we launched this instance without a key (then it runs no sshd)."""
    if record is not None and not record.ssh_key:
        return None
    return view.ssh_tunnel()


def instance_row(view: InstanceView, record: Record | None) -> dict[str, Any]:
    """One instance as `list --json` and `status --json` print it."""
    return {
        "id": view.id,
        "status": view.status,
        "status_msg": view.status_msg,
        "gpu": f"{view.num_gpus}x {view.gpu_name}",
        "dph_total": view.dph_total,
        "label": view.label,
        "model": record.model if record else None,
        "url": (record.url if record and record.url else view.base_url()),
        "ssh_tunnel": tunnel(view, record),
        "recorded": record is not None,
    }


def instances_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(show_edge=False)
    for column in INSTANCE_COLUMNS:
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
    return table


def ready_json(record: Record, ready: Ready) -> dict[str, Any]:
    """`launch --json` once the endpoint answers."""
    return {
        "id": record.id,
        "offer_id": record.offer_id,
        "url": ready.base_url,
        "api_key": record.api_key,
        "model": record.model,
        "ssh_tunnel": record.ssh_tunnel,
        "curl": curl_example(ready.base_url, record.api_key, record.model),
    }


def ready_lines(record: Record, ready: Ready) -> list[str]:
    """`launch` once the endpoint answers: where it is, the key, a request to try, the tunnel, how to stop."""
    view = ready.instance
    gpu, price = view.gpu_name or record.gpu, view.dph_total or record.dph_total
    lines = [
        f"Ready: instance {view.id} ({view.num_gpus}x {gpu}, ${price:.3f}/h)",
        f"  endpoint:   {ready.base_url}",
        f"  API key:    {record.api_key}",
        f"  model:      {record.model}",
        f"  try it:     {curl_example(ready.base_url, record.api_key, record.model)}",
    ]
    if record.ssh_tunnel:
        lines.append(
            f"  SSH tunnel: {record.ssh_tunnel}   (then vLLM itself at http://localhost:{VLLM_PORT}, no token)"
        )
    elif not record.ssh_key:
        lines.append("  SSH tunnel: none (launched without a public key: --ssh-key FILE)")
    else:
        lines.append(f"  SSH tunnel: Vast shows no port for 22/tcp yet; try `reranker vast status {view.id}`")
    lines.append(f"  stop paying: reranker vast destroy {view.id}")
    return lines


def status_lines(
    view: InstanceView, record: Record | None, row: dict[str, Any], health: HealthProbe | None, show_key: bool
) -> list[str]:
    """`status`: Vast's view, /health, the endpoint, and what this machine recorded (the key only if asked)."""
    label = f", label {view.label}" if view.label else ""
    lines = [view.status_line, f"  GPU: {row['gpu']}, ${view.dph_total:.3f}/h{label}"]
    if health:
        lines.append(f"  {health.describe()}")
    if row["url"]:
        lines.append(f"  endpoint: {row['url']}")
    if record:
        lines.append(f"  model: {record.model}")
        lines.append(f"  API key: {record.api_key if show_key else '(recorded; --show-key prints it)'}")
    else:
        lines.append(
            "  not launched from this machine: the API key is whatever API_KEYS/OPEN_BUTTON_TOKEN it was given"
        )
    if row["ssh_tunnel"]:
        needs_key = "" if record else "   (if the instance was given SSH_PUBLIC_KEY)"
        lines.append(f"  SSH tunnel: {row['ssh_tunnel']}{needs_key}")
    elif record and not record.ssh_key:
        lines.append("  SSH tunnel: none (launched without a public key)")
    if view.status in FAILED_STATUSES:
        lines.append(f"  {logs_hint(view.id)}")
    return lines
