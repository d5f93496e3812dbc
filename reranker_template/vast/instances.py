"""Instances: what a rented machine runs (`LaunchSpec`), renting it, reading it back, destroying it.

Rule: everything a user can get wrong is checked before the create call (`LaunchSpec.validate`,
`read_public_key`, `parse_env_pairs` raise ConfigError), because after it the instance bills.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reranker_template.errors import ConfigError, VastError
from reranker_template.release import IMAGE
from reranker_template.serve.sshd import ssh_tunnel_command
from reranker_template.settings import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_MODEL,
    DEFAULT_SSH_PORT,
    DEFAULT_VLLM_PORT,
    load_settings,
    parse_ssh_keys,
)
from reranker_template.vast.api import VastApi, vast_call
from reranker_template.vast.offers import DEFAULT_DISK_GB

if TYPE_CHECKING:
    from reranker_template.serve.preflight import Report

GATEWAY_PORT = DEFAULT_GATEWAY_PORT
VLLM_PORT = DEFAULT_VLLM_PORT
# The image's own sshd (entrypoint mode starts none), published so `ssh -L` reaches vLLM's loopback port.
SSH_PORT = DEFAULT_SSH_PORT
# What `launch` sends as SSH_PUBLIC_KEY unless --ssh-key says otherwise: the first that exists.
DEFAULT_PUBLIC_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
# The statuses after which waiting is pointless.
FAILED_STATUSES = ("exited",)
CONSOLE_INSTANCES_URL = "https://cloud.vast.ai/instances/"


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


def preflight(spec: LaunchSpec, env: Mapping[str, str]) -> Report:
    """The model checks the instance's launcher will make (serve/preflight.py), made here before renting: with
    the token the instance gets (--env HF_TOKEN, never this machine's) and its empty disk of `spec.disk_gb`.
    `env` is this machine's (HF_ENDPOINT, its Hugging Face cache for config.json, HF_HUB_OFFLINE)."""
    from reranker_template.plan.preflight import Advice
    from reranker_template.serve.preflight import Report, Target
    from reranker_template.serve.preflight import preflight as check
    from reranker_template.settings import is_true

    instance = {k: v for k, v in spec.env().items() if not k.startswith("-")}
    settings = load_settings(instance)
    if settings.model_is_local_path:
        return Report()  # a path on the instance (provisioned there): nothing to check from here
    advice = Advice(
        set_token="pass it to the instance with --env HF_TOKEN=hf_... (a token of an account that can read it)",
        bigger_disk="rent a bigger disk with --disk {gb}",
    )
    target = Target(
        advice=advice,
        token=instance.get("HF_TOKEN") or False,
        free_bytes=int(spec.disk_gb * 1e9),
        where=f"the instance's {spec.disk_gb:g} GB disk (--disk)",
        use_cache=False,
    )
    return check(settings, env, target, offline=is_true(env.get("HF_HUB_OFFLINE")))


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
    """`--env KEY=VALUE` arguments as pairs (ConfigError names the bad one)."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError("--env", pair, "KEY=VALUE, e.g. --env HF_TOKEN=hf_...")
        out.append((key, value))
    return tuple(out)


def create_instance(client: VastApi, offer_id: int, spec: LaunchSpec) -> int:
    """Rent the offer with our image. Returns the new instance id.

    Give it a client made with retry=1: a gateway error (502/503/504) or a timeout may come after Vast
    rented the offer, and a blind retry would rent a second instance that bills silently.
    """
    unsure = "the instance may have been created anyway: check `reranker vast list` before trying again"
    gateway_error = {
        status: VastError(f"Vast answered {status} while renting offer {offer_id}; {unsure}")
        for status in (502, 503, 504)
    }
    timed_out = VastError(f"Vast did not answer in time while renting offer {offer_id}; {unsure}")
    with vast_call(f"renting offer {offer_id}", offer_id, by_status=gateway_error, on_timeout=timed_out):
        reply = client.create_instance(
            offer_id,
            image=IMAGE,
            disk=spec.disk_gb,
            env=spec.env(),
            label=spec.label,
            runtype="args",  # keeps the image's ENTRYPOINT (`reranker boot`)
            cancel_unavail=True,  # fail now instead of leaving a stopped instance that bills storage
        )
    if not isinstance(reply, dict) or not reply.get("success") or not reply.get("new_contract"):
        reason = (reply.get("msg") or reply.get("error") if isinstance(reply, dict) else reply) or "no reason given"
        raise VastError(f"Vast did not create the instance for offer {offer_id}: {reason}")
    return int(reply["new_contract"])


def destroy_instance(client: VastApi, instance_id: int) -> None:
    gone = VastError(f"instance {instance_id} does not exist on your account (already destroyed?)")
    with vast_call(f"destroying instance {instance_id}", by_status={404: gone}):
        client.destroy_instance(instance_id)


@dataclass(frozen=True)
class InstanceView:
    """One instance as Vast reports it, with the ports we publish already looked up."""

    id: int
    status: str  # Vast's actual_status (its own vocabulary); "scheduling" while Vast has not set one
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

    @property
    def status_line(self) -> str:
        """`instance 123: loading (pulling image)`: Vast's status and message, verbatim."""
        return f"instance {self.id}: {self.status}" + (f" ({self.status_msg})" if self.status_msg else "")

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
    """The external port for `internal` from Vast's docker-style `ports` map (any JSON: checked here)."""
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


def show_instance(client: VastApi, instance_id: int) -> InstanceView:
    gone = VastError(f"instance {instance_id} does not exist on your account (destroyed?)")
    with vast_call(f"reading instance {instance_id}", by_status={404: gone}):
        row = client.show_instance(instance_id)
    if not row:
        raise gone
    return InstanceView.from_api(row)


def list_instances(client: VastApi) -> list[InstanceView]:
    with vast_call("listing instances"):
        rows = client.show_instances()
    return [InstanceView.from_api(row) for row in rows or []]


def logs_hint(instance_id: int) -> str:
    return f"see its logs with `vastai logs {instance_id}` or the Logs button at {CONSOLE_INSTANCES_URL}"
