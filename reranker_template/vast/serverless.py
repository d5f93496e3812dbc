"""Vast Serverless: an endpoint (the name clients use, with the scaling policy) and a worker group (our
image as a template, plus the offers its instances are rented from), on the vastai SDK.

Defaults for rerankers (`EndpointPolicy`), each with its reason:
- cold_workers 1: one stopped instance that already holds the image and the model, so the first
  scale-up is a restart (about a minute) rather than a pull and a download; it costs disk, not GPU time.
- max_workers 4: a bound on the bill while you learn the load; `scale --max-workers` raises it.
- min_load 0: no always-on capacity, so an idle endpoint pays for no GPU; a search system that must
  answer the first query at once sets --min-load (workload units per second, see workload.py).
- target_util 0.8: rerank calls come in bursts (one per search); 20 % headroom absorbs a burst
  without queueing while a new worker starts.
- target_queue_time 5 s, max_queue_time 30 s: a rerank sits in the path of a search, so the
  autoscaler adds workers once requests wait seconds, and a worker refuses (429, re-routed) past 30 s.
The worker group rents from the same offers as `reranker vast search` (GPU memory from the model's
need, verified hosts, a static IP and a direct port) and asks for that much GPU memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reranker_template.errors import UserError, VastError
from reranker_template.release import IMAGE_REPOSITORY, IMAGE_TAG
from reranker_template.vast.api import VastApi, vast_call
from reranker_template.vast.instances import GATEWAY_PORT, SSH_PORT
from reranker_template.vast.offers import OfferQuery, mib_to_query_gb
from reranker_template.vast.template import Published, publish_template, template_body

WORKER_PORT = 3000
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
TEMPLATE_PREFIX = "vLLM Reranker serverless: "
_OPERATORS = {"eq": "=", "gte": ">=", "lte": "<=", "gt": ">", "lt": "<"}


@dataclass(frozen=True)
class EndpointPolicy:
    """The endpoint's scaling settings (the module docstring says why these defaults)."""

    cold_workers: int = 1
    max_workers: int = 4
    min_load: float = 0.0
    target_util: float = 0.8
    target_queue_time: float = 5.0
    max_queue_time: float = 30.0
    inactivity_timeout: float | None = None  # seconds; None: Vast's default

    def fields(self) -> dict[str, Any]:
        """As the SDK's create_endpoint/update_endpoint take them."""
        return {
            "cold_workers": self.cold_workers,
            "max_workers": self.max_workers,
            "min_load": self.min_load,
            "target_util": self.target_util,
            "target_queue_time": self.target_queue_time,
            "max_queue_time": self.max_queue_time,
            "inactivity_timeout": self.inactivity_timeout,
        }


@dataclass(frozen=True)
class ServerlessSpec:
    endpoint: str
    model: str
    offers: OfferQuery
    policy: EndpointPolicy = EndpointPolicy()
    vllm_args: str = ""
    image: str = DEFAULT_IMAGE
    baked: bool = False  # the image was built with MODEL_NAME=model baked in (serve/baked.py)


def check_endpoint_name(name: str) -> str:
    """Endpoint names are part of URLs and of the template's name: letters, digits, - and _."""
    if not name or not all(c.isalnum() or c in "-_" for c in name) or len(name) > 64:
        raise UserError(f"--endpoint {name!r}: use up to 64 letters, digits, '-' and '_'")
    return name


def search_params(query: OfferQuery) -> str:
    """The worker group's offer search in Vast's query syntax (`vastai search offers`), from the same
    filters as `reranker vast search`; GPU memory in GB, as that syntax reads it."""
    parts = []
    for name, condition in query.filters().items():
        for operator, value in condition.items():
            if name == "gpu_ram":
                value = mib_to_query_gb(value)
            shown = str(value) if not isinstance(value, bool) else ("True" if value else "False")
            parts.append(f"{name}{_OPERATORS[operator]}{shown}")
    return " ".join(parts)


def serverless_template(spec: ServerlessSpec, readme: str) -> dict[str, Any]:
    """Our Vast template for the worker group: the image, the worker port published, the model."""
    body = template_body(readme)
    repository, _, tag = spec.image.rpartition(":")
    env = {"MODEL_NAME": spec.model, "VLLM_ARGS": spec.vllm_args, "SERVERLESS": "true"}
    ports = [f"-p {port}:{port}" for port in (GATEWAY_PORT, SSH_PORT, WORKER_PORT)]
    body.update(
        name=TEMPLATE_PREFIX + spec.endpoint,
        image=repository or spec.image,
        tag=tag or "latest",
        env=" ".join(ports + [f"-e {key}={value}" for key, value in env.items() if value]),
        desc=f"Serverless worker group of endpoint {spec.endpoint}: {spec.model}"
        + (" (baked into the image)" if spec.baked else ""),
        extra_filters=spec.offers.filters(),
        recommended_disk_space=spec.offers.disk_gb,
    )
    return body


def _listed(reply: list[dict[str, Any]] | dict[str, Any], what: str) -> list[dict[str, Any]]:
    """A listing's rows; the SDK returns {"error": msg} for an unsuccessful answer."""
    if isinstance(reply, dict):
        raise VastError(f"Vast did not list your {what}: {reply.get('error')}")
    return reply


def find_endpoint(client: VastApi, name: str) -> dict[str, Any] | None:
    with vast_call("listing your serverless endpoints"):
        rows = _listed(client.show_endpoints(), "endpoints")
    found = [row for row in rows if row.get("endpoint_name") == name]
    return found[0] if found else None


def endpoint_groups(client: VastApi, endpoint_id: int) -> list[dict[str, Any]]:
    with vast_call("listing your worker groups"):
        rows = _listed(client.show_workergroups(), "worker groups")
    return [row for row in rows if row.get("endpoint_id") == endpoint_id]


def _new_id(reply: Any, what: str) -> int:
    """The id in a create reply: {"success": true, "result": id} (endpoints) or {"id": ...}."""
    if isinstance(reply, dict) and reply.get("success") is not False:
        for key in ("result", "id", "workergroup_id", "autojob_id"):
            if isinstance(reply.get(key), int):
                return int(reply[key])
    message = reply.get("msg") or reply.get("error") if isinstance(reply, dict) else reply
    raise VastError(f"Vast did not create the {what}: {message}")


@dataclass(frozen=True)
class UpResult:
    endpoint_id: int
    endpoint_action: str  # created / updated
    workergroup_id: int
    workergroup_action: str
    template: Published


def serverless_up(client: VastApi, spec: ServerlessSpec, readme: str, gpu_ram_gb: float) -> UpResult:
    """Create or update (by name) the template, the endpoint and the endpoint's worker group."""
    published = publish_template(client, serverless_template(spec, readme))
    existing = find_endpoint(client, spec.endpoint)
    policy = spec.policy.fields()
    if existing is None:
        with vast_call("creating the endpoint"):
            endpoint_id = _new_id(client.create_endpoint(endpoint_name=spec.endpoint, **policy), "endpoint")
        endpoint_action = "created"
    else:
        endpoint_id = int(existing["id"])
        with vast_call("updating the endpoint"):
            client.update_endpoint(endpoint_id, endpoint_name=spec.endpoint, **policy)
        endpoint_action = "updated"
    group = {
        "template_hash": published.hash_id,
        "template_id": published.template_id,
        "search_params": search_params(spec.offers),
        "gpu_ram": gpu_ram_gb,
        "endpoint_id": endpoint_id,
        "endpoint_name": spec.endpoint,
        "no_default": True,  # our filters already hold the defaults the SDK would append
    }
    groups = endpoint_groups(client, endpoint_id)
    if groups:
        workergroup_id = int(groups[0]["id"])
        with vast_call("updating the worker group"):
            client.update_workergroup(workergroup_id, **group)
        workergroup_action = "updated"
    else:
        with vast_call("creating the worker group"):
            workergroup_id = _new_id(client.create_workergroup(**group), "worker group")
        workergroup_action = "created"
    return UpResult(endpoint_id, endpoint_action, workergroup_id, workergroup_action, published)


def require_endpoint(client: VastApi, name: str) -> dict[str, Any]:
    found = find_endpoint(client, name)
    if found is None:
        raise UserError(
            f"no serverless endpoint named {name!r} in this Vast account: "
            f"create it with `reranker vast serverless up --endpoint {name} --model MODEL`"
        )
    return found


def endpoint_workers(client: VastApi, endpoint_id: int) -> list[dict[str, Any]]:
    """The endpoint's instances as the autoscaler sees them (status, load, measured capacity)."""
    with vast_call("listing the endpoint's workers"):
        rows = client.get_endpoint_workers(endpoint_id)
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def scale_endpoint(client: VastApi, endpoint: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change some of the endpoint's scaling settings; the others are sent as they are now (the API
    takes the whole record)."""
    current = {key: endpoint.get(key) for key in EndpointPolicy().fields()}
    merged = {**current, **{key: value for key, value in changes.items() if value is not None}}
    with vast_call("updating the endpoint"):
        client.update_endpoint(int(endpoint["id"]), endpoint_name=endpoint["endpoint_name"], **merged)
    return merged


@dataclass(frozen=True)
class DownResult:
    workergroups: list[int]
    destroyed: list[int]  # instances of the endpoint we destroyed
    left: list[int]  # instances still listed afterwards (should be none)


def serverless_down(client: VastApi, endpoint: Mapping[str, Any]) -> DownResult:
    """Delete the worker groups and the endpoint, then destroy the endpoint's instances (deleting a
    worker group leaves them running, and billing) and check that none is left."""
    endpoint_id = int(endpoint["id"])
    workers = [int(row["id"]) for row in endpoint_workers(client, endpoint_id) if row.get("id") is not None]
    groups = [int(row["id"]) for row in endpoint_groups(client, endpoint_id)]
    for group_id in groups:
        with vast_call(f"deleting worker group {group_id}"):
            client.delete_workergroup(group_id)
    with vast_call("deleting the endpoint"):
        client.delete_endpoint(endpoint_id)
    with vast_call("listing your instances"):
        labelled = {int(row["id"]) for row in client.show_instances() if row.get("id") is not None}
    destroyed = []
    for instance_id in workers:
        if instance_id in labelled:
            with vast_call(f"destroying instance {instance_id}"):
                client.destroy_instance(instance_id)
            destroyed.append(instance_id)
    with vast_call("checking that no instance is left"):
        remaining = {int(row["id"]) for row in client.show_instances() if row.get("id") is not None}
    return DownResult(groups, destroyed, sorted(remaining & set(workers)))


# Worker states of Vast's autoscaler that are not (yet, or any more) serving.
NOT_SERVING = frozenset({"error", "errored", "creating", "loading", "model_loading", "stopped", "inactive", "offline"})


def worker_ready(worker: Mapping[str, Any]) -> bool:
    """A worker serves when the autoscaler has seen it loaded and reports no error state."""
    status = str(worker.get("status") or "").lower()
    return status not in NOT_SERVING and float(worker.get("loaded_at") or 0) > 0


def workers_summary(workers: list[dict[str, Any]]) -> str:
    """ "2 workers: 1 idle, 1 loading" (or "no workers yet")."""
    if not workers:
        return "no workers yet"
    counts: dict[str, int] = {}
    for worker in workers:
        status = str(worker.get("status") or "unknown").lower()
        counts[status] = counts.get(status, 0) + 1
    return f"{len(workers)} worker(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
