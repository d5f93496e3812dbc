"""Vast.ai: the template, finding an offer, renting it, waiting until it answers, tearing it down.

Built on the `vastai` package's SDK (`VastAI`), which speaks Vast's HTTP API. The SDK raises
`requests.HTTPError` on API errors; everything here turns those into `VastError`, one line that says
what to change (the vastai CLI prints such errors and exits 0; our commands must not).

Decisions (filters, request bodies, the template, what a status means) are pure functions; the edges
that talk to Vast, to the instance and to the records file are thin and take their collaborators as
arguments so tests can point them at loopback stand-ins.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shlex
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from reranker_template.errors import InstanceFailed, OfferGone, VastError
from reranker_template.release import IMAGE, IMAGE_REPOSITORY, IMAGE_TAG
from reranker_template.serve.sshd import ssh_tunnel_command
from reranker_template.settings import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_MODEL,
    DEFAULT_SSH_PORT,
    DEFAULT_VLLM_PORT,
    ConfigError,
    load_settings,
    parse_ssh_keys,
)

DEFAULT_VAST_URL = "https://console.vast.ai"
TEMPLATE_NAME = "vLLM Reranker (reranker-template)"
TEMPLATE_DESC = "vLLM serving a reranker behind token auth: /v1/rerank, /v2/rerank, /v1/score on port 8000"
GATEWAY_PORT = DEFAULT_GATEWAY_PORT
VLLM_PORT = DEFAULT_VLLM_PORT
# The image's own sshd (entrypoint mode starts none), published so `ssh -L` reaches vLLM's loopback port.
SSH_PORT = DEFAULT_SSH_PORT
# What `launch` sends as SSH_PUBLIC_KEY unless --ssh-key says otherwise: the first that exists.
DEFAULT_PUBLIC_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
DEFAULT_DISK_GB = 40.0
# Turing (7.5) or newer: what vLLM's CUDA build supports.
MIN_COMPUTE_CAP = 750
# Vast's own vLLM template learned this: cheap hosts below it often could not download models.
MIN_RELIABILITY = 0.95
# Per GPU, not in total (multi-GPU boxes of small cards ran out of memory). 16 GB is what Vast's
# reranker guide and vLLM template ask for; a bigger model raises it (see `min_gpu_ram_mb`).
DEFAULT_MIN_GPU_RAM_GB = 16.0
# The statuses after which waiting is pointless.
FAILED_STATUSES = ("exited",)
CONSOLE_INSTANCES_URL = "https://cloud.vast.ai/instances/"
KEYS_URL = "https://cloud.vast.ai/manage-keys/"
BILLING_URL = "https://cloud.vast.ai/billing/"
README_SECTION_HEADING = "## Deploy on Vast.ai"

Reporter = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# The client and its errors
# --------------------------------------------------------------------------------------------------


def vast_url(env: Mapping[str, str]) -> str:
    """The API base URL: VAST_URL (as the vastai package reads it), without a trailing slash."""
    return (env.get("VAST_URL") or DEFAULT_VAST_URL).strip().rstrip("/")


def config_home(env: Mapping[str, str]) -> Path:
    xdg = env.get("XDG_CONFIG_HOME", "").strip()
    if xdg:
        return Path(xdg)
    return Path(env.get("HOME") or Path.home()) / ".config"


def find_api_key(env: Mapping[str, str]) -> str:
    """VAST_API_KEY, then the vastai CLI's key file (what `vastai set api-key` writes)."""
    key = env.get("VAST_API_KEY", "").strip()
    if key:
        return key
    home = Path(env.get("HOME") or Path.home())
    for path in (config_home(env) / "vastai" / "vast_api_key", home / ".vast_api_key"):
        try:
            key = path.read_text().strip()
        except OSError:
            continue
        if key:
            return key
    raise VastError(f"no Vast API key: set VAST_API_KEY to a key from {KEYS_URL} (or run `vastai set api-key KEY`)")


def make_client(env: Mapping[str, str], retry: int = 3) -> Any:
    """A `vastai.VastAI` for VAST_URL and the user's key."""
    key = find_api_key(env)
    try:
        from vastai import VastAI
    except ImportError:
        raise VastError("the vastai package is not installed: pip install 'reranker-template[vast]'") from None
    return VastAI(api_key=key, server_url=vast_url(env), retry=retry)


def _error_fields(response: requests.Response | None) -> tuple[str, str]:
    """(error code, message) from a Vast error body like {"error": "auth_error", "msg": "..."}."""
    if response is None:
        return "", ""
    try:
        body = response.json()
    except ValueError:
        return "", (response.text or "").strip()[:200]
    if not isinstance(body, dict):
        return "", str(body)[:200]
    code = str(body.get("error") or "")
    message = str(body.get("msg") or body.get("message") or body.get("detail") or code)
    return code, message


def explain_http_error(exc: requests.HTTPError, action: str, offer_id: int | None = None) -> VastError:
    """One line for an API error: what happened and what to do about it."""
    response = exc.response
    status = response.status_code if response is not None else 0
    code, message = _error_fields(response)
    said = f" ({message})" if message else ""
    text = f"{code} {message}".lower()
    if status in (401, 403):
        return VastError(f"Vast rejected the API key{said}: set VAST_API_KEY to a valid key from {KEYS_URL}")
    if status == 429:
        retry_after = response.headers.get("Retry-After") if response is not None else None
        when = f"in {retry_after} s" if retry_after else "in a minute"
        return VastError(f"Vast is rate limiting this API key{said}: try again {when}")
    if status == 402 or "credit" in text or "balance" in text:
        return VastError(f"not enough credit on your Vast account{said}: add credit at {BILLING_URL}")
    if offer_id is not None and (
        status == 404 or "no_such_ask" in text or "not available" in text or "unavailable" in text
    ):
        return OfferGone(
            f"offer {offer_id} is no longer available{said}: someone else rented it; "
            "pick another with `reranker vast search`, or use --cheapest"
        )
    return VastError(f"Vast API error {status} while {action}{said}")


@contextmanager
def vast_call(action: str, offer_id: int | None = None) -> Iterator[None]:
    """Translate the SDK's exceptions into VastError for the duration of one API call."""
    try:
        yield
    except requests.HTTPError as exc:
        raise explain_http_error(exc, action, offer_id) from None
    except requests.ConnectionError as exc:
        raise VastError(
            f"cannot reach the Vast API while {action} ({type(exc).__name__}): check your network or VAST_URL"
        ) from None
    except requests.Timeout:
        raise VastError(f"the Vast API did not answer in time while {action}: try again") from None


# --------------------------------------------------------------------------------------------------
# Offers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryNeed:
    """The per-GPU memory filter and why it has that value."""

    gpu_ram_mb: float
    reason: str


def min_gpu_ram(model_need_gib: float | None, user_min_gb: float | None) -> MemoryNeed:
    """Per-GPU memory filter in Vast's unit (gpu_ram is MB; user GB are x1000 as in `vastai search`)."""
    if user_min_gb is not None:
        return MemoryNeed(user_min_gb * 1000, "--min-gpu-ram")
    floor = DEFAULT_MIN_GPU_RAM_GB * 1000
    if model_need_gib is None:
        return MemoryNeed(floor, f"the {DEFAULT_MIN_GPU_RAM_GB:g} GB default: the model's size is unknown")
    need_mb = float(math.ceil(model_need_gib * 1024))  # GiB -> MiB, the unit cards report
    if need_mb > floor:
        return MemoryNeed(need_mb, f"the model needs {model_need_gib:.1f} GiB per GPU")
    return MemoryNeed(floor, f"the {DEFAULT_MIN_GPU_RAM_GB:g} GB minimum; the model needs {model_need_gib:.1f} GiB")


@dataclass(frozen=True)
class OfferQuery:
    gpu_ram_mb: float
    num_gpus: int = 1
    max_price: float | None = None
    limit: int = 10
    disk_gb: float = DEFAULT_DISK_GB

    def filters(self) -> dict[str, Any]:
        """The search filters (the SDK adds order, type, limit and allocated_storage)."""
        query: dict[str, Any] = {
            "verified": {"eq": True},
            "external": {"eq": False},
            "rentable": {"eq": True},
            "rented": {"eq": False},
            "compute_cap": {"gte": MIN_COMPUTE_CAP},
            "gpu_ram": {"gte": self.gpu_ram_mb},
            "num_gpus": {"eq": self.num_gpus},
            "reliability2": {"gte": MIN_RELIABILITY},
            "direct_port_count": {"gte": 1},
            "static_ip": {"eq": True},
        }
        if self.max_price is not None:
            query["dph_total"] = {"lte": self.max_price}
        return query


@dataclass(frozen=True)
class Offer:
    id: int
    gpu_name: str
    num_gpus: int
    gpu_ram_mb: float
    dph_total: float
    reliability: float
    location: str
    compute_cap: float | None = None

    @classmethod
    def from_api(cls, row: Mapping[str, Any]) -> Offer:
        reliability = row.get("reliability2", row.get("reliability"))
        return cls(
            id=int(row["id"]),
            gpu_name=str(row.get("gpu_name") or "?"),
            num_gpus=int(row.get("num_gpus") or 0),
            gpu_ram_mb=float(row.get("gpu_ram") or 0),
            dph_total=float(row.get("dph_total") or 0),
            reliability=float(reliability or 0),
            location=str(row.get("geolocation") or "?"),
            compute_cap=float(row["compute_cap"]) if row.get("compute_cap") is not None else None,
        )

    @property
    def gpu_ram_gb(self) -> float:
        return self.gpu_ram_mb / 1024

    def summary(self) -> str:
        return f"offer {self.id}: {self.num_gpus}x {self.gpu_name} ({self.gpu_ram_gb:.0f} GB each), ${self.dph_total:.3f}/h, {self.location}"


def search_offers(client: Any, query: OfferQuery) -> list[Offer]:
    """Matching offers, cheapest first."""
    with vast_call("searching offers"):
        rows = client.search_offers(
            query=query.filters(), order="dph_total", limit=query.limit, storage=query.disk_gb, no_default=True
        )
    return [Offer.from_api(row) for row in rows or []]


def get_offer(client: Any, offer_id: int, disk_gb: float = DEFAULT_DISK_GB) -> Offer:
    """One offer by id, if it can still be rented."""
    query = {"id": {"eq": offer_id}, "rentable": {"eq": True}, "rented": {"eq": False}}
    with vast_call(f"looking up offer {offer_id}", offer_id):
        rows = client.search_offers(query=query, order="dph_total", limit=1, storage=disk_gb, no_default=True)
    if not rows:
        raise OfferGone(
            f"offer {offer_id} is not available (already rented, or no such offer): "
            "pick another with `reranker vast search`, or use --cheapest"
        )
    return Offer.from_api(rows[0])


# --------------------------------------------------------------------------------------------------
# Launching
# --------------------------------------------------------------------------------------------------


def new_api_key() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class LaunchSpec:
    """What the instance runs. `api_key` goes to the instance as API_KEYS, nowhere else."""

    model: str = DEFAULT_MODEL
    vllm_args: str = ""
    use_all_gpus: bool = True
    https: bool = False
    disk_gb: float = DEFAULT_DISK_GB
    label: str | None = None
    extra_env: tuple[tuple[str, str], ...] = ()
    api_key: str = field(default="", repr=False)
    ssh_public_key: str = ""  # the user's public key(s): the image then runs sshd for the tunnel

    def env(self) -> dict[str, str]:
        """The create request's env: our public port(s), the Open button, the settings, the keys."""
        env = {
            f"-p {GATEWAY_PORT}:{GATEWAY_PORT}": "1",
            "OPEN_BUTTON_PORT": str(GATEWAY_PORT),
            "MODEL_NAME": self.model,
            "VLLM_ARGS": self.vllm_args,
            "USE_ALL_GPUS": "true" if self.use_all_gpus else "false",
            "API_KEYS": self.api_key,
        }
        if self.ssh_public_key:
            env["SSH_PUBLIC_KEY"] = self.ssh_public_key
        if self.https:
            # Only when asked: sending "false" would override ENABLE_HTTPS set in the account's settings.
            env["ENABLE_HTTPS"] = "true"
        env.update(dict(self.extra_env))
        if env.get("SSH_PUBLIC_KEY"):
            env[f"-p {SSH_PORT}:{SSH_PORT}"] = "1"  # the image's sshd runs only with a key: publish it then
        return env

    def validate(self) -> None:
        """Catch bad settings here rather than after paying for an instance (raises ConfigError)."""
        load_settings({k: v for k, v in self.env().items() if not k.startswith("-")})


def default_public_key(env: Mapping[str, str]) -> Path | None:
    """The first of ~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub that exists."""
    ssh_dir = Path(env.get("HOME") or Path.home()) / ".ssh"
    return next((ssh_dir / name for name in DEFAULT_PUBLIC_KEYS if (ssh_dir / name).is_file()), None)


def read_public_key(path: Path) -> str:
    """The public key(s) in `path`, validated as the instance will (ConfigError names --ssh-key)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "--ssh-key", str(path), f"a readable public key file such as ~/.ssh/id_ed25519.pub ({type(exc).__name__})"
        ) from None
    keys = parse_ssh_keys("--ssh-key", text)
    if not keys:
        raise ConfigError("--ssh-key", str(path), "a file with an OpenSSH public key (ssh-keygen -t ed25519 makes one)")
    # Several keys: joined by a literal backslash-n, which SSH_PUBLIC_KEY accepts, so the env value stays one line.
    return "\\n".join(keys)


def parse_env_pairs(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError("--env", pair, "KEY=VALUE, e.g. --env HF_TOKEN=hf_...")
        out.append((key, value))
    return tuple(out)


def create_instance(client: Any, offer_id: int, spec: LaunchSpec) -> int:
    """Rent the offer with our image. Returns the new instance id.

    Give it a client made with retry=1: a gateway error (502/503/504) may come after Vast rented the
    offer, and a blind retry would rent a second instance that bills silently.
    """
    with vast_call(f"renting offer {offer_id}", offer_id):
        try:
            reply = client.create_instance(
                offer_id,
                image=IMAGE,
                disk=spec.disk_gb,
                env=spec.env(),
                label=spec.label,
                runtype="args",  # keeps the image's ENTRYPOINT (`reranker boot`)
                cancel_unavail=True,  # fail now instead of leaving a stopped instance that bills storage
            )
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            if status in (502, 503, 504):
                raise VastError(
                    f"Vast answered {status} while renting offer {offer_id}; the instance may have been created anyway: "
                    "check `reranker vast list` before trying again"
                ) from None
            raise
        except requests.Timeout:
            raise VastError(
                f"Vast did not answer in time while renting offer {offer_id}; the instance may have been created anyway: "
                "check `reranker vast list` before trying again"
            ) from None
    if not isinstance(reply, dict) or not reply.get("success") or not reply.get("new_contract"):
        code, message = (reply.get("error", ""), reply.get("msg", "")) if isinstance(reply, dict) else ("", str(reply))
        raise VastError(
            f"Vast did not create the instance for offer {offer_id}: {message or code or 'no reason given'}"
        )
    return int(reply["new_contract"])


def destroy_instance(client: Any, instance_id: int) -> None:
    with vast_call(f"destroying instance {instance_id}"):
        try:
            client.destroy_instance(instance_id)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                raise VastError(f"instance {instance_id} does not exist on your account (already destroyed?)") from None
            raise


# --------------------------------------------------------------------------------------------------
# Instances
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceView:
    id: int
    status: str  # actual_status; "scheduling" while Vast has not set one
    intended_status: str | None = None
    status_msg: str = ""
    public_ip: str | None = None
    gateway_port: int | None = None  # the external port mapped to 8000
    ssh_mapped_port: int | None = None  # the external port mapped to 22 (our sshd, with SSH_PUBLIC_KEY)
    ssh_host: str | None = None
    ssh_port: int | None = None
    gpu_name: str = ""
    num_gpus: int = 0
    dph_total: float = 0.0
    label: str | None = None
    image: str | None = None

    @classmethod
    def from_api(cls, row: Mapping[str, Any]) -> InstanceView:
        return cls(
            id=int(row["id"]),
            status=str(row.get("actual_status") or "scheduling"),
            intended_status=row.get("intended_status"),
            status_msg=str(row.get("status_msg") or "").strip(),
            public_ip=(str(row["public_ipaddr"]).strip() or None) if row.get("public_ipaddr") else None,
            gateway_port=mapped_port(row.get("ports"), GATEWAY_PORT),
            ssh_mapped_port=mapped_port(row.get("ports"), SSH_PORT),
            ssh_host=row.get("ssh_host"),
            ssh_port=int(row["ssh_port"]) if row.get("ssh_port") else None,
            gpu_name=str(row.get("gpu_name") or ""),
            num_gpus=int(row.get("num_gpus") or 0),
            dph_total=float(row.get("dph_total") or 0),
            label=row.get("label"),
            image=row.get("image_uuid") or row.get("image"),
        )

    def base_url(self, scheme: str = "http") -> str | None:
        if not self.public_ip or not self.gateway_port:
            return None
        return f"{scheme}://{self.public_ip}:{self.gateway_port}"

    def ssh_tunnel(self) -> str | None:
        """Straight to the image's sshd on the port Vast maps to 22 (Vast's own ssh_host/ssh_port lead to
        an SSH server that entrypoint mode does not start)."""
        if not self.public_ip or not self.ssh_mapped_port:
            return None
        return ssh_tunnel_command(self.public_ip, self.ssh_mapped_port, VLLM_PORT)


def mapped_port(ports: Any, internal: int) -> int | None:
    """The external port for `internal` from Vast's docker-style `ports` map."""
    if not isinstance(ports, Mapping):
        return None
    for key in (f"{internal}/tcp", str(internal)):
        bindings = ports.get(key)
        if isinstance(bindings, list):
            for binding in bindings:
                try:
                    return int(binding["HostPort"])
                except (KeyError, TypeError, ValueError):
                    continue
    return None


def show_instance(client: Any, instance_id: int) -> InstanceView:
    with vast_call(f"reading instance {instance_id}"):
        try:
            row = client.show_instance(instance_id)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                row = None
            else:
                raise
    if not row:
        raise VastError(f"instance {instance_id} does not exist on your account (destroyed?)")
    return InstanceView.from_api(row)


def list_instances(client: Any) -> list[InstanceView]:
    with vast_call("listing instances"):
        rows = client.show_instances()
    return [InstanceView.from_api(row) for row in rows or []]


def logs_hint(instance_id: int) -> str:
    return f"see its logs with `vastai logs {instance_id}` or the Logs button at {CONSOLE_INSTANCES_URL}"


# --------------------------------------------------------------------------------------------------
# Waiting until the endpoint answers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health:
    state: str  # "ready", "loading", "failed", "down", "unreachable"
    detail: str = ""
    scheme: str = "http"

    def describe(self) -> str:
        return f"/health: {self.state}" + (f" ({self.detail})" if self.detail else "")


def probe_health(base_host: str, port: int, api_key: str, schemes: Sequence[str], timeout: float = 5.0) -> Health:
    """GET /health over each scheme in turn; the first that answers HTTP at all decides.

    The gateway answers 503 {"status": "loading", "phase": ...} until vLLM is ready, then 200. With
    ENABLE_HTTPS the instance serves Vast's own certificate, which this machine need not trust.
    """
    failed: Health | None = None  # no HTTP answer at all
    odd: Health | None = None  # an HTTP answer that is not our gateway's
    for scheme in schemes:
        url = f"{scheme}://{base_host}:{port}/health"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                response = requests.get(
                    url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout, verify=False
                )
        except requests.RequestException as exc:
            failed = failed or Health("unreachable", type(exc).__name__, scheme)
            continue
        try:
            body = response.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        state = str(body.get("status") or "")
        if response.status_code == 200 and state == "ready":
            return Health("ready", "", scheme)
        if state in ("loading", "failed", "down"):
            detail = str(body.get("reason") or body.get("phase") or "")
            return Health(state, detail, scheme)
        # Something answered that is not our gateway yet (Vast's proxy, a plain-HTTP error from TLS).
        odd = odd or Health("unreachable", f"HTTP {response.status_code}", scheme)
    return odd or failed or Health("unreachable", "no answer", schemes[0])


@dataclass(frozen=True)
class WaitOptions:
    timeout: float = 1800.0  # image pull + model download can take a while
    poll_interval: float = 5.0
    request_timeout: float = 5.0
    # The launcher restarts a vLLM that failed to start; only a failure that lasts this long ends the wait.
    failed_grace: float = 120.0


@dataclass(frozen=True)
class Ready:
    instance: InstanceView
    base_url: str


def wait_until_ready(
    client: Any,
    instance_id: int,
    api_key: str,
    *,
    prefer_https: bool = False,
    options: WaitOptions = WaitOptions(),
    report: Reporter = lambda _line: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Ready:
    """Poll the instance until it runs, then its /health until ready. Reports each change once."""
    deadline = clock() + options.timeout
    schemes = ("https", "http") if prefer_https else ("http", "https")
    last_status = last_health = None
    health: Health | None = None
    failed_since: float | None = None
    while True:
        view = show_instance(client, instance_id)
        status_line = f"instance {instance_id}: {view.status}" + (f" ({view.status_msg})" if view.status_msg else "")
        if status_line != last_status:
            report(status_line)
            last_status = status_line
        if view.status in FAILED_STATUSES or view.intended_status == "stopped":
            last_msg = f": {view.status_msg}" if view.status_msg else ""
            raise InstanceFailed(
                f"instance {instance_id} {view.status}{last_msg}; {logs_hint(instance_id)}; "
                f"remove it with `reranker vast destroy {instance_id}`"
            )
        if view.status == "running" and view.public_ip and view.gateway_port:
            health = probe_health(view.public_ip, view.gateway_port, api_key, schemes, options.request_timeout)
            schemes = (health.scheme, *[s for s in schemes if s != health.scheme])
            if health.describe() != last_health:
                report(health.describe())
                last_health = health.describe()
            if health.state == "ready":
                return Ready(view, f"{health.scheme}://{view.public_ip}:{view.gateway_port}")
            failed_since = (failed_since or clock()) if health.state == "failed" else None
            if failed_since is not None and clock() - failed_since >= options.failed_grace:
                raise InstanceFailed(
                    f"instance {instance_id}: vLLM failed to start ({health.detail or 'no reason given'}); "
                    f"{logs_hint(instance_id)}; remove it with `reranker vast destroy {instance_id}`"
                )
        if clock() >= deadline:
            where = f"last status: {view.status}" + (f" ({view.status_msg})" if view.status_msg else "")
            if health is not None:
                where += f", {health.describe()}"
            raise InstanceFailed(
                f"instance {instance_id} was not ready after {options.timeout:g} s ({where}); {logs_hint(instance_id)}; "
                f"wait with `reranker vast status {instance_id}` or remove it with `reranker vast destroy {instance_id}`"
            )
        sleep(options.poll_interval)


def curl_example(base_url: str, api_key: str, model: str) -> str:
    body = json.dumps(
        {
            "model": model,
            "query": "What is deep learning?",
            "documents": ["Deep learning is a type of machine learning", "I like pizza"],
        }
    )
    insecure = "-k " if base_url.startswith("https") else ""
    return (
        f"curl {insecure}{base_url}/v1/rerank -H 'Authorization: Bearer {api_key}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )


# --------------------------------------------------------------------------------------------------
# Records: ~/.config/reranker/instances.json (0600, it holds API keys)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    id: int
    offer_id: int
    model: str
    api_key: str = field(repr=False)
    label: str | None = None
    url: str | None = None
    gpu: str = ""
    dph_total: float = 0.0
    ssh_tunnel: str | None = None
    created_at: float = 0.0
    ssh_key: str | None = None  # the public key file sent as SSH_PUBLIC_KEY; None: the instance has no sshd


def records_path(env: Mapping[str, str]) -> Path:
    return config_home(env) / "reranker" / "instances.json"


def load_records(path: Path) -> dict[int, Record]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise VastError(f"cannot read {path} ({exc}): fix or remove the file") from None
    rows = data.get("instances", {}) if isinstance(data, dict) else {}
    known = Record.__dataclass_fields__
    return {int(k): Record(**{f: v for f, v in row.items() if f in known}) for k, row in rows.items()}


def save_records(path: Path, records: Mapping[int, Record]) -> None:
    """Replace the file atomically; it is created 0600 and never exists with looser permissions."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"instances": {str(k): asdict(r) for k, r in sorted(records.items())}}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".instances.", suffix=".tmp")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def put_record(path: Path, record: Record) -> None:
    records = load_records(path)
    records[record.id] = record
    save_records(path, records)


def drop_record(path: Path, instance_id: int) -> bool:
    records = load_records(path)
    if instance_id not in records:
        return False
    del records[instance_id]
    save_records(path, records)
    return True


# --------------------------------------------------------------------------------------------------
# The template
# --------------------------------------------------------------------------------------------------


TEMPLATE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("OPEN_BUTTON_PORT", str(GATEWAY_PORT)),
    ("MODEL_NAME", DEFAULT_MODEL),
    ("VLLM_ARGS", ""),
    ("USE_ALL_GPUS", "true"),
    ("API_KEYS", ""),
    ("SSH_PUBLIC_KEY", ""),
    ("PROVISIONING_SCRIPT", ""),
    ("ENABLE_HTTPS", "false"),
)


def template_env() -> str:
    """Docker options as Vast stores them: the public ports, then the settings with their defaults."""
    parts = [f"-p {GATEWAY_PORT}:{GATEWAY_PORT}", f"-p {SSH_PORT}:{SSH_PORT}"]
    parts += [f"-e {key}={value}" for key, value in TEMPLATE_SETTINGS]
    return " ".join(parts)


def template_filters() -> dict[str, Any]:
    """The offers the console shows for the template (the model is chosen later, so the default floor)."""
    return OfferQuery(gpu_ram_mb=DEFAULT_MIN_GPU_RAM_GB * 1000).filters()


def readme_section(readme_md: str) -> str:
    """The "Deploy on Vast.ai" section of README.md: from its heading to the next `## ` heading."""
    lines = readme_md.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == README_SECTION_HEADING)
    except StopIteration:
        raise VastError(f"README.md has no {README_SECTION_HEADING!r} section") from None
    end = len(lines)
    in_code = False
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and (lines[i].startswith("## ") or lines[i].startswith("<!-- section:")):
            end = i
            break
    return "\n".join(lines[start:end]).strip() + "\n"


def project_readme() -> str:
    """README.md of a checkout, else the installed package's long description (the same file)."""
    candidate = Path(__file__).resolve().parents[2] / "README.md"
    if candidate.is_file():
        text = candidate.read_text()
        if README_SECTION_HEADING in text:
            return text
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        return metadata("reranker-template").get_payload() or ""  # type: ignore[attr-defined]
    except PackageNotFoundError:
        raise VastError("cannot find README.md (the template's readme comes from it)") from None


def template_body(readme: str) -> dict[str, Any]:
    """The template as Vast's API takes it (and as template.json holds it)."""
    return {
        "name": TEMPLATE_NAME,
        "image": IMAGE_REPOSITORY,
        "tag": IMAGE_TAG,
        "env": template_env(),
        "onstart": None,
        "runtype": "args",  # keeps the image's ENTRYPOINT (`reranker boot`); ssh/jupyter would replace it
        "use_ssh": False,
        "readme": readme,
        "readme_visible": True,
        "desc": TEMPLATE_DESC,
        "extra_filters": template_filters(),
        "recommended_disk_space": DEFAULT_DISK_GB,
        "private": True,
    }


def template_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, indent=2) + "\n"


@dataclass(frozen=True)
class Published:
    action: str  # "created" or "updated"
    hash_id: str | None
    template_id: int | None


def find_own_template(client: Any, name: str) -> dict[str, Any] | None:
    """The caller's own template with this name (public templates by others can share it)."""
    with vast_call("looking up your templates"):
        user_id = client.show_user().get("id")
        matches = client.search_templates({"name": {"eq": name}}) or []
    own = [t for t in matches if t.get("creator_id") == user_id and t.get("name") == name]
    return max(own, key=lambda t: t.get("id") or 0) if own else None


def publish_template(client: Any, body: Mapping[str, Any], public: bool = False) -> Published:
    """Create the template, or update the caller's existing one with the same name."""
    fields = dict(
        name=body["name"],
        image=body["image"],
        image_tag=body["tag"],
        env=body["env"],
        onstart_cmd=body.get("onstart"),
        runtype=body["runtype"],
        use_ssh=body.get("use_ssh", False),
        readme=body["readme"],
        readme_visible=body.get("readme_visible", True),
        desc=body.get("desc"),
        extra_filters=body["extra_filters"],
        disk_space=body["recommended_disk_space"],
        private=not public,
    )
    existing = find_own_template(client, body["name"])
    if existing is None:
        with vast_call("creating the template"):
            reply = client.create_template(**fields)
        action = "created"
    else:
        with vast_call("updating the template"):
            try:
                reply = client.update_template(hash_id=existing["hash_id"], **fields)
            except ValueError as exc:  # the SDK's "no template with this hash_id"
                raise VastError(f"cannot update template {existing.get('hash_id')}: {exc}") from None
        action = "updated"
    template = reply.get("template", reply) if isinstance(reply, dict) else {}
    if isinstance(reply, dict) and reply.get("success") is False:
        raise VastError(f"Vast did not save the template: {reply.get('msg') or reply.get('error')}")
    return Published(action, template.get("hash_id"), template.get("id"))
