"""Waiting until a rented instance serves: its Vast status first, then the gateway's /health.

Rules: each change is reported once; an instance Vast reports as exited (or stopped) ends the wait at
once; a vLLM that reports "failed" ends it at once when the launcher gave up (`final`: a retry cannot
help), otherwise after `failed_grace` (the launcher restarts it once);
anything that answers /health but is not our gateway (Vast's proxy, plain HTTP to a TLS port) counts
as unreachable, never as ready. The gateway's body is read with `protocol.HealthBody`, its one reader.
"""

from __future__ import annotations

import json
import shlex
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from reranker_template.errors import InstanceFailed
from reranker_template.protocol import HealthBody, HealthState
from reranker_template.vast.api import VastApi
from reranker_template.vast.instances import FAILED_STATUSES, InstanceView, logs_hint, show_instance

Reporter = Callable[[str], None]
UNREACHABLE: Final = "unreachable"


@dataclass(frozen=True)
class HealthProbe:
    """What one look at an instance's /health found, and over which scheme."""

    state: HealthState | Literal["unreachable"]
    detail: str = ""
    scheme: str = "http"
    final: bool = False  # failed, and the launcher gave up: no point in waiting

    @property
    def reachable(self) -> bool:
        """Our gateway answered (whatever it said)."""
        return self.state != UNREACHABLE

    def describe(self) -> str:
        return f"/health: {self.state}" + (f" ({self.detail})" if self.detail else "")


def _judge(status_code: int, data: Any, scheme: str) -> HealthProbe | None:
    """The probe for an HTTP answer, or None when it is not our gateway's ("ready" counts only with a 200)."""
    body = HealthBody.from_json(data)
    if body is None or (body.status is HealthState.READY and status_code != 200):
        return None
    if body.status is HealthState.READY:
        return HealthProbe(body.status, "", scheme)
    return HealthProbe(body.status, body.detail or "", scheme, body.final)


def probe_health(host: str, port: int, api_key: str, schemes: Sequence[str], timeout: float = 5.0) -> HealthProbe:
    """GET /health over each scheme in turn; the first that answers as our gateway decides.

    The gateway answers 503 {"status": "loading", "phase": ...} until vLLM is ready, then 200. With
    ENABLE_HTTPS the instance serves Vast's own certificate, which this machine need not trust.
    """
    import requests  # here, not at the top: only the commands that wait need it

    no_answer: HealthProbe | None = None  # no HTTP answer at all
    odd: HealthProbe | None = None  # an HTTP answer that is not our gateway's
    for scheme in schemes:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # verify=False warns on every request
                response = requests.get(
                    f"{scheme}://{host}:{port}/health",
                    headers={"Authorization": f"Bearer {api_key}"},
                    timeout=timeout,
                    verify=False,
                )
        except requests.RequestException as exc:
            no_answer = no_answer or HealthProbe(UNREACHABLE, type(exc).__name__, scheme)
            continue
        try:
            data = response.json()
        except ValueError:
            data = None
        probe = _judge(response.status_code, data, scheme)
        if probe is not None:
            return probe
        odd = odd or HealthProbe(UNREACHABLE, f"HTTP {response.status_code}", scheme)
    return odd or no_answer or HealthProbe(UNREACHABLE, "no answer", schemes[0])


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


def _check_alive(view: InstanceView) -> None:
    """Raise InstanceFailed if Vast says the instance stopped: waiting longer cannot help."""
    if view.status in FAILED_STATUSES or view.intended_status == "stopped":
        last_msg = f": {view.status_msg}" if view.status_msg else ""
        raise InstanceFailed(
            f"instance {view.id} {view.status}{last_msg}; {logs_hint(view.id)}; "
            f"remove it with `reranker vast destroy {view.id}`"
        )


def _timed_out(view: InstanceView, health: HealthProbe | None, timeout: float) -> InstanceFailed:
    where = f"last status: {view.status}" + (f" ({view.status_msg})" if view.status_msg else "")
    if health is not None:
        where += f", {health.describe()}"
    return InstanceFailed(
        f"instance {view.id} was not ready after {timeout:g} s ({where}); {logs_hint(view.id)}; "
        f"wait with `reranker vast status {view.id}` or remove it with `reranker vast destroy {view.id}`"
    )


def wait_until_ready(
    client: VastApi,
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
    schemes: tuple[str, ...] = ("https", "http") if prefer_https else ("http", "https")
    last: dict[str, str] = {}
    health: HealthProbe | None = None
    failed_since: float | None = None

    def report_change(kind: str, line: str) -> None:
        if last.get(kind) != line:
            report(line)
            last[kind] = line

    while True:
        view = show_instance(client, instance_id)
        report_change("instance", view.status_line)
        _check_alive(view)
        if view.status == "running" and view.public_ip and view.gateway_port:
            health = probe_health(view.public_ip, view.gateway_port, api_key, schemes, options.request_timeout)
            schemes = (health.scheme, *[s for s in schemes if s != health.scheme])  # stick to what answered
            report_change("health", health.describe())
            if health.state == HealthState.READY:
                return Ready(view, f"{health.scheme}://{view.public_ip}:{view.gateway_port}")
            if health.state != HealthState.FAILED:
                failed_since = None
            elif failed_since is None:
                failed_since = clock()
            if failed_since is not None and (health.final or clock() - failed_since >= options.failed_grace):
                raise InstanceFailed(
                    f"instance {instance_id}: vLLM failed to start ({health.detail or 'no reason given'}); "
                    f"{logs_hint(instance_id)}; remove it with `reranker vast destroy {instance_id}`"
                )
        if clock() >= deadline:
            raise _timed_out(view, health, options.timeout)
        sleep(options.poll_interval)


def curl_example(base_url: str, api_key: str, model: str) -> str:
    """A rerank request to paste into a shell (-k for Vast's certificate)."""
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
