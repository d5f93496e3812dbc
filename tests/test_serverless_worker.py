"""Vast Serverless with the real pieces: our stack in serverless mode (supervisord runs our worker, on the
vastai SDK's worker framework, beside a real CPU vLLM serving the bundled cross-encoder), the SDK's own
client routing through a stand-in of Vast's router (tests/support/fake_serverless.py), and a stand-in of
Vast's console for the endpoint's key. Signatures are checked for real with a key pair made here.
TLS between client and worker is off here (USE_SSL=false): the certificate Vast signs is tested in
test_serverless.py, against a stand-in console that signs with a test CA.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_serverless import ENDPOINT, FakeRouter, StandInCa
from support.fake_vast import API_KEY, USER_ID, FakeVast
from support.loopback import LoopbackServer, Reply, free_port
from support.stack_runner import RERANKER, RunningStack, http_get, http_post_json, minilm_dir, start_stack

from reranker_template.client import RerankerClient
from reranker_template.errors import UserError
from reranker_template.workload import request_workload

pytestmark = pytest.mark.vllm

ENDPOINT_ID = 201
ENDPOINT_KEY = "endpoint-key-201"
MASTER_TOKEN = "master-token-for-tests"
QUERY = "How do I bake sourdough bread?"
DOCUMENTS = [
    "The stock market closed higher on Friday after strong earnings reports.",
    "Sourdough bread is baked from a starter of wild yeast: feed it, mix the dough, let it rise overnight.",
    "Penguins live in the southern hemisphere.",
]


@pytest.fixture(scope="module")
def console() -> Iterator[FakeVast]:
    """Vast's console: lists the endpoint (with its key) to the SDK's client."""
    server = FakeVast().start()
    server.root_certificate = StandInCa().pem()
    server.endpoints[ENDPOINT_ID] = {
        "id": ENDPOINT_ID,
        "endpoint_name": ENDPOINT,
        "api_key": ENDPOINT_KEY,
        "user_id": USER_ID,
        "created_at": 0.0,
        "endpoint_state": "active",
    }
    yield server
    server.stop()


def worker_env(router: FakeRouter, port: int, container_id: str) -> dict[str, str]:
    """What Vast sets on a serverless instance (MASTER_TOKEN turns serverless mode on), TLS off."""
    return {
        "MASTER_TOKEN": MASTER_TOKEN,
        "CONTAINER_ID": container_id,
        "PUBLIC_IPADDR": "127.0.0.1",
        "WORKER_PORT": str(port),
        f"VAST_TCP_PORT_{port}": str(port),
        "REPORT_ADDR": router.url,
        "USE_SSL": "false",
    }


@pytest.fixture(scope="module")
def router() -> Iterator[FakeRouter]:
    server = FakeRouter(ENDPOINT_KEY).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def worker_stack(
    tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path, router: FakeRouter
) -> Iterator[RunningStack]:
    port = free_port()
    stack = start_stack(
        tmp_path_factory.mktemp("serverless"),
        "",  # the default model, the bundled cross-encoder
        served_name="",
        cache_root=vllm_cache_root,
        extra_env=worker_env(router, port, "777"),
    )
    stack.extra["worker_url"] = f"http://127.0.0.1:{port}"
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def ready_report(worker_stack: RunningStack, router: FakeRouter) -> dict[str, Any]:
    return router.wait_for_report(lambda r: r.get("loadtime", 0) > 0 or bool(r.get("error_msg")), timeout=300)


def client_env(console: FakeVast, router: FakeRouter) -> dict[str, str]:
    return {**os.environ, "VAST_URL": console.url, "VAST_API_KEY": API_KEY, "VAST_AUTOSCALER_URL": router.url}


def test_the_worker_reports_ready_with_its_measured_capacity(
    worker_stack: RunningStack, ready_report: dict[str, Any]
) -> None:
    assert not ready_report["error_msg"], ready_report
    assert ready_report["id"] == 777 and ready_report["mtoken"] == MASTER_TOKEN
    assert ready_report["url"] == worker_stack.extra["worker_url"]
    # 16 documents of ~128 tokens per benchmark request: thousands of units per second even on 2 CPU cores.
    assert ready_report["max_perf"] > 100, ready_report
    assert "RUNNING" in worker_stack.supervisorctl("status", "worker")


def test_a_request_routed_through_vast_ranks_as_the_gateway_does(
    worker_stack: RunningStack, ready_report: dict[str, Any], console: FakeVast, router: FakeRouter
) -> None:
    with RerankerClient.for_serverless(ENDPOINT, client_env(console, router)) as client:
        routed = client.rerank(QUERY, DOCUMENTS)
        scored = client.score(QUERY, DOCUMENTS)
    with RerankerClient(worker_stack.gateway_url, worker_stack.token) as direct:
        expected = direct.rerank(QUERY, DOCUMENTS)
        expected_scores = direct.score(QUERY, DOCUMENTS)
    assert [hit.index for hit in routed.results] == [hit.index for hit in expected.results]
    assert routed.results[0].index == 1
    for mine, theirs in zip(routed.results, expected.results, strict=True):
        assert mine.relevance_score == pytest.approx(theirs.relevance_score, abs=1e-5)
    assert scored.scores == pytest.approx(expected_scores.scores, abs=1e-5)
    # The cost the client declared is the workload measure the worker's capacity is counted in.
    costs = [body["cost"] for body in router.routes]
    assert request_workload({"query": QUERY, "documents": DOCUMENTS}) in costs


def test_each_rerank_api_answers_in_its_shape_through_the_worker_as_through_the_gateway(
    worker_stack: RunningStack, ready_report: dict[str, Any], console: FakeVast, router: FakeRouter
) -> None:
    body = {"query": QUERY, "documents": DOCUMENTS, "return_documents": False}
    with RerankerClient.for_serverless(ENDPOINT, client_env(console, router)) as client:
        assert client.route is not None
        cohere = client.route.request_json("POST", "/v2/rerank", body)
        jina = client.route.request_json("POST", "/v1/rerank", {**body, "return_documents": True})
    _, through_gateway = http_post_json(worker_stack.gateway_url + "/v2/rerank", body)
    assert set(cohere) == set(through_gateway) == {"id", "results", "meta"}
    assert cohere["results"][0]["index"] == 1 and set(cohere["results"][0]) == {"index", "relevance_score"}
    assert cohere["meta"]["billed_units"] == through_gateway["meta"]["billed_units"] == {"search_units": 1}
    assert jina["results"][0]["document"] == {"text": DOCUMENTS[1]}  # no multi_modal: null


def test_a_busy_or_failing_worker_is_routed_around(
    worker_stack: RunningStack, ready_report: dict[str, Any], console: FakeVast, router: FakeRouter
) -> None:
    """The router first hands out a worker that answers 429 (its queue is full), then one that answers
    503: the client asks the router again, with the same request index, and gets the answer elsewhere."""
    with LoopbackServer() as busy, LoopbackServer() as broken:
        busy.answer("/v1/rerank", Reply.json({"error": "queue full"}, 429))
        broken.answer("/v1/rerank", Reply.json({"error": "down"}, 503))
        router.detours = [busy.url, broken.url]
        before = len(router.routes)
        with RerankerClient.for_serverless(ENDPOINT, client_env(console, router)) as client:
            result = client.rerank(QUERY, DOCUMENTS)
        assert len(busy.requests) == 1 and len(broken.requests) == 1
    assert result.results[0].index == 1
    routes = router.routes[before:]
    assert len(routes) == 3 and routes[1]["request_idx"] == routes[2]["request_idx"] != 0, routes


def test_a_document_longer_than_the_model_is_cut_as_the_gateway_cuts_it(
    worker_stack: RunningStack, ready_report: dict[str, Any], console: FakeVast, router: FakeRouter
) -> None:
    long_document = "sourdough starter flour water salt " * 400  # ~2000 tokens; the model takes 512
    documents = [long_document, DOCUMENTS[0]]
    body = {"query": QUERY, "documents": documents}
    status, answer = http_post_json(worker_stack.vllm_url + "/v1/rerank", body, token=None)
    assert status == 400, "vLLM itself refuses it: the default truncation is what makes it work"
    with RerankerClient.for_serverless(ENDPOINT, client_env(console, router)) as client:
        routed = client.rerank(QUERY, documents)
    status, through_gateway = http_post_json(worker_stack.gateway_url + "/v1/rerank", body)
    assert status == 200
    assert [hit.index for hit in routed.results] == [r["index"] for r in through_gateway["results"]]


def test_a_forged_or_missing_signature_is_refused(worker_stack: RunningStack, ready_report: dict[str, Any]) -> None:
    url = worker_stack.extra["worker_url"]
    forged = base64.b64encode(b"\0" * 256).decode()
    auth = {"cost": 10, "endpoint": ENDPOINT, "reqnum": 1, "request_idx": 1, "signature": forged, "url": url}
    payload = {"query": QUERY, "documents": DOCUMENTS}
    status, _ = http_post_json(url + "/v1/rerank", {"auth_data": auth, "payload": payload}, token=None)
    assert status == 401
    status, answer = http_post_json(url + "/v1/rerank", {"payload": payload}, token=None)
    assert status == 422 and "auth_data" in answer


def test_reranker_query_and_bench_take_a_serverless_endpoint(
    worker_stack: RunningStack, ready_report: dict[str, Any], console: FakeVast, router: FakeRouter
) -> None:
    env = client_env(console, router)

    def reranker(*argv: str) -> Any:
        result = subprocess.run([RERANKER, *argv], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert reranker("query", "--serverless", ENDPOINT, "--json", QUERY, *DOCUMENTS)["results"][0]["index"] == 1
    report = reranker("bench", "--serverless", ENDPOINT, "--concurrency", "2", "--requests", "4", "--json")
    row = report["results"][0]
    assert row["ok"] == 4 and row["errors"] == 0 and row["invalid"] == 0, row
    # Refused requests (forged signatures, vLLM's 400 for an over-long document) never made the worker
    # report an error: readiness comes from the launcher's status, not from alarming log lines.
    assert not any(report.get("error_msg") for report in router.reports)


def test_an_unknown_endpoint_name_says_how_to_create_it(console: FakeVast, router: FakeRouter) -> None:
    with pytest.raises(UserError, match="reranker vast serverless up --endpoint nope"):
        RerankerClient.for_serverless("nope", client_env(console, router))


@pytest.fixture(scope="module")
def broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 whose weights file was cut short: it plans, then fails to load in vLLM."""
    directory = tmp_path_factory.mktemp("broken") / "minilm"
    shutil.copytree(minilm_dir(), directory)
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    return directory


def test_a_model_that_fails_to_load_is_reported_to_vast_with_our_reason(
    tmp_path: Path, vllm_cache_root: Path, broken_model: Path
) -> None:
    router = FakeRouter(ENDPOINT_KEY).start()
    port = free_port()
    stack = start_stack(
        tmp_path, str(broken_model), wait=False, cache_root=vllm_cache_root, extra_env=worker_env(router, port, "778")
    )
    try:
        report = router.wait_for_report(lambda r: bool(r.get("error_msg")), timeout=400)
        _, body = http_get(stack.gateway_url + "/health")
        reason = json.loads(body)["reason"]
        assert reason and reason in report["error_msg"], (reason, report["error_msg"])
        assert reason.startswith(f"the weights of {broken_model} are damaged or incomplete"), reason
    finally:
        stack.stop()
        router.stop()
