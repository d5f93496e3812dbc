"""Our Vast Serverless worker: the vastai SDK's worker framework in front of vLLM, run by supervisord.

Vast's autoscaler starts instances of a worker group and routes each client request, signed, to one
of them; on the instance a small "worker" checks the signature, forwards the payload to the model
server, and reports load and measured capacity back (../shared notes: vast-serverless). This module
configures the SDK's `Worker` for a reranker:

- Routes: /v1/rerank (Jina/Cohere v1), /v2/rerank (Cohere v2), /rerank, /v1/score, /score; forwarded
  to vLLM on loopback with the same default truncation as the gateway (`plan/truncation.py`), so a
  request answers the same through either, in the same shape (`rerank_api.py`: Jina's, Cohere v2's);
  parallel requests on (the SDK's default is one at a time).
- Workload: `workload.request_workload` (about tokens), the same measure every client sends as cost.
- Capacity: the SDK benchmarks /v1/rerank with BENCHMARK_CONCURRENCY requests of one query and
  BENCHMARK_DOCUMENTS documents of ~128 tokens, the load a search system sends.
- Readiness: from our launcher's status file (a `lifecycle`), not from log lines: ready once vLLM
  answers and the known-answer check is done, and a model the launcher gave up on is reported as an
  error with the launcher's one-sentence reason. (Log matching would read stale lines and take any
  "Traceback" for a fatal error.)

The SDK reads its settings from os.environ (WORKER_PORT, REPORT_ADDR, USE_SSL, UNSECURED, CONTAINER_ID,
PUBLIC_IPADDR, VAST_TCP_PORT_<port>, MASTER_TOKEN); `read_worker_environment` checks them first so a
template mistake is one line that says what to change, and `sdk_variables` fills in the defaults Vast's
own bootstrap script would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from reranker_template import rerank_api
from reranker_template.errors import ConfigError, Failure, UserError
from reranker_template.plan.contract import TruncationPolicy
from reranker_template.plan.truncation import apply_default_truncation
from reranker_template.serve.status import Phase, QualityState, VllmStatus, read_status
from reranker_template.settings import parse_bool, parse_port
from reranker_template.workload import request_workload

log = logging.getLogger("reranker.worker")

DEFAULT_WORKER_PORT = 3000
DEFAULT_REPORT_ADDR = "https://run.vast.ai"
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/score")
BENCHMARK_ROUTE = "/v1/rerank"
BENCHMARK_CONCURRENCY = 8
BENCHMARK_RUNS = 3
BENCHMARK_DOCUMENTS = 16
BENCHMARK_DOCUMENT_WORDS = 100  # about 128 tokens
# The SDK answers 429 (the client re-routes) when its queue would take longer than this to drain.
MAX_QUEUE_SECONDS = 30.0
STATUS_POLL_SECONDS = 0.5
_WORDS = tuple(
    " ".join(
        (
            "search ranking retrieval query document passage model vector index score relevant answer context",
            "question latency throughput token batch embedding cross encoder reranker dataset benchmark result",
            "server cluster region storage cache network request response metric quality recall precision",
        )
    ).split()
)


@dataclass(frozen=True)
class WorkerEnvironment:
    """What the worker needs from Vast's environment, checked."""

    port: int
    report_addr: str
    use_ssl: bool
    unsecured: bool
    container_id: int
    public_ip: str
    public_port: str
    master_token: str

    @property
    def public_url(self) -> str:
        """Where Vast's router sends clients (the SDK reports the same URL)."""
        return f"{'https' if self.use_ssl else 'http'}://{self.public_ip}:{self.public_port}"


def _required(env: Mapping[str, str], name: str, expected: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise UserError(f"serverless worker: {name} is not set: it is {expected}")
    return value


def read_worker_environment(env: Mapping[str, str]) -> WorkerEnvironment:
    """The worker's settings, with the defaults of Vast's start_server.sh (port 3000, TLS on, run.vast.ai).

    Raises UserError naming the variable when Vast's part is missing (CONTAINER_ID, PUBLIC_IPADDR, and
    VAST_TCP_PORT_<port>, which Vast sets only for ports the template publishes: -p 3000:3000), and
    ConfigError for a value it cannot use.
    """
    port = parse_port("WORKER_PORT", env["WORKER_PORT"]) if env.get("WORKER_PORT") else DEFAULT_WORKER_PORT
    container = _required(env, "CONTAINER_ID", "the instance's id, which Vast sets on every instance")
    if not container.isdigit():
        raise ConfigError("CONTAINER_ID", container, "the instance's numeric id, which Vast sets")
    published = f"publish the worker port in the template's Docker options: -p {port}:{port}"
    return WorkerEnvironment(
        port=port,
        report_addr=(env.get("REPORT_ADDR") or DEFAULT_REPORT_ADDR).strip(),
        use_ssl=parse_bool("USE_SSL", env["USE_SSL"]) if env.get("USE_SSL") else True,
        unsecured=parse_bool("UNSECURED", env["UNSECURED"]) if env.get("UNSECURED") else False,
        container_id=int(container),
        public_ip=_required(env, "PUBLIC_IPADDR", f"the instance's public address, set by Vast ({published})"),
        public_port=_required(env, f"VAST_TCP_PORT_{port}", f"the public port Vast maps to {port} ({published})"),
        master_token=env.get("MASTER_TOKEN", "").strip(),
    )


def sdk_variables(worker: WorkerEnvironment) -> dict[str, str]:
    """The variables the SDK reads from os.environ, as `worker` decided them."""
    return {
        "WORKER_PORT": str(worker.port),
        "REPORT_ADDR": worker.report_addr,
        "USE_SSL": "true" if worker.use_ssl else "false",
        "UNSECURED": "true" if worker.unsecured else "false",
        "CONTAINER_ID": str(worker.container_id),
        "PUBLIC_IPADDR": worker.public_ip,
        f"VAST_TCP_PORT_{worker.port}": worker.public_port,
        "MASTER_TOKEN": worker.master_token,
    }


def benchmark_request(model: str, rng: random.Random) -> dict[str, Any]:
    """One rerank call as a search system sends it: a short query and BENCHMARK_DOCUMENTS passages."""

    def text(words: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(words))

    return {
        "model": model,
        "query": text(12),
        "documents": [text(BENCHMARK_DOCUMENT_WORDS) for _ in range(BENCHMARK_DOCUMENTS)],
    }


class WorkerStartFailed(Failure):
    """The stack will not serve (the launcher gave up, or the known-answer check failed): the worker
    reports this message to Vast as its error."""


def readiness_failure(status: VllmStatus) -> str | None:
    """Why this status means the worker will never be ready, or None."""
    if status.gave_up:
        return status.reason or "vLLM failed to start"
    if status.phase is Phase.READY and status.quality_check is QualityState.FAILED:
        return f"the known-answer check failed: {status.quality_detail or 'wrong ranking'}"
    return None


def is_ready(status: VllmStatus) -> bool:
    """vLLM answers and the known-answer check passed (or is switched off): scores can be trusted."""
    return status.phase is Phase.READY and status.quality_check in (QualityState.PASSED, QualityState.SKIPPED)


class StackReadiness:
    """The SDK's `lifecycle`: entering waits until the launcher's status says ready; raises
    WorkerStartFailed (which the SDK reports as the worker's error) when it says it never will be."""

    def __init__(self, status_file: Path) -> None:
        self.status_file = status_file

    async def __aenter__(self) -> StackReadiness:
        while True:
            status = read_status(self.status_file) or VllmStatus()
            failure = readiness_failure(status)
            if failure:
                raise WorkerStartFailed(failure)
            if is_ready(status):
                log.info("vLLM is ready: running the capacity benchmark")
                return self
            await asyncio.sleep(STATUS_POLL_SECONDS)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        return None


async def reshaped_answer(api: rerank_api.RerankApi, client_request: Any, model_response: Any) -> Any:
    """vLLM's answer to a rerank route in the shape of the API the client called (rerank_api.py), as the
    gateway gives it; an answer that is not JSON as vLLM gave it."""
    from aiohttp import web

    raw = await model_response.read()
    try:
        body = json.loads(raw)
        envelope = await client_request.json()  # the SDK has read it already: aiohttp keeps the body
    except ValueError:
        return web.Response(status=model_response.status, body=raw, content_type=model_response.content_type)
    if model_response.status < 400:
        payload = envelope.get("payload") if isinstance(envelope, dict) else None
        body = rerank_api.shape_answer(rerank_api.RerankAsked.of(api, payload), body)
    else:
        body = rerank_api.shape_error(api, body)
    return web.json_response(body, status=model_response.status)


def worker_config(
    model: str, vllm_port: int, truncation: TruncationPolicy | None, status_file: Path, seed: int = 0
) -> Any:
    """The SDK's WorkerConfig for our routes (see the module docstring)."""
    from vastai import BenchmarkConfig, HandlerConfig, WorkerConfig

    rng = random.Random(seed)

    def handler(route: str, benchmark: bool) -> Any:
        api = rerank_api.api_for(route)  # score routes keep vLLM's shape: the SDK passes them through
        return HandlerConfig(
            route=route,
            allow_parallel_requests=True,
            max_queue_time=MAX_QUEUE_SECONDS,
            request_parser=lambda payload: apply_default_truncation(route, payload, truncation),
            response_generator=(lambda request, response: reshaped_answer(api, request, response)) if api else None,
            workload_calculator=request_workload,
            benchmark_config=BenchmarkConfig(
                generator=lambda: benchmark_request(model, rng),
                runs=BENCHMARK_RUNS,
                concurrency=BENCHMARK_CONCURRENCY,
            )
            if benchmark
            else None,
        )

    return WorkerConfig(
        model_server_url="http://127.0.0.1",
        model_server_port=vllm_port,
        model_healthcheck_url="/health",
        handlers=[handler(route, route == BENCHMARK_ROUTE) for route in ROUTES],
        lifecycle=StackReadiness(status_file),
    )


def run(env: Mapping[str, str], plan_file: Path, status_file: Path, console_url: str) -> int:
    """The worker process (supervisord's `worker` program): check Vast's environment, get the TLS
    certificate, then run the SDK's server until stopped. A start that cannot work is reported to
    Vast's autoscaler as this worker's error, so the worker group shows why, and exits."""
    import os

    try:
        from vastai import Worker
    except ImportError:
        raise UserError(
            "serverless mode (MASTER_TOKEN or SERVERLESS=true) needs the vastai package: "
            "pip install 'reranker-template[vast]', or unset SERVERLESS"
        ) from None
    from reranker_template.plan.contract import read_plan
    from reranker_template.serve import worker_tls

    container = env.get("CONTAINER_ID", "").strip()
    worker_env: WorkerEnvironment | None = None
    try:
        worker_env = read_worker_environment(env)
        if worker_env.use_ssl:
            worker_tls.ensure_certificate(console_url, worker_env.container_id)
    except (UserError, Failure) as exc:
        if container.isdigit():  # Vast can still be told which worker is broken, and why
            report_addr = (env.get("REPORT_ADDR") or DEFAULT_REPORT_ADDR).strip()
            url = worker_env.public_url if worker_env else ""
            worker_tls.report_error(report_addr, int(container), env.get("MASTER_TOKEN", "").strip(), url, str(exc))
        raise
    plan = read_plan(plan_file)
    os.environ.update(sdk_variables(worker_env))  # the SDK reads these from os.environ, nowhere else
    config = worker_config(plan.served_model_name, plan.vllm_port, plan.truncation, status_file)
    worker = Worker(config)
    logging.getLogger().setLevel(logging.INFO)  # Worker() sets DEBUG, which logs every status report
    log.info(
        "serverless worker on port %d (%s, signatures %s) -> vLLM on 127.0.0.1:%d; reporting to %s as %s",
        worker_env.port,
        "https" if worker_env.use_ssl else "http",
        "NOT checked (UNSECURED)" if worker_env.unsecured else "checked",
        plan.vllm_port,
        worker_env.report_addr,
        worker_env.public_url,
    )
    worker.run()
    return 0
