"""`reranker bench`: the checks and statistics, and a short real run against the stack (gateway vs vLLM)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.gateway_upstream import REPO, FakeUpstream, start_gateway
from support.loopback import Reply
from support.stack_runner import RERANKER

from reranker_template.client.bench import LevelResult, Tally, Workload, check_response, compare, percentile, split

RESULT_FIELDS = {
    "target",
    "url",
    "concurrency",
    "requests",
    "ok",
    "errors",
    "invalid",
    "seconds",
    "requests_per_s",
    "pairs_per_s",
    "latency_ms_p50",
    "latency_ms_p95",
    "latency_ms_p99",
    "latency_ms_mean",
    "first_problem",
}


def rerank_answer(order: list[int], scores: list[float]) -> dict:
    pairs = zip(order, scores, strict=True)
    return {"results": [{"index": i, "relevance_score": s, "document": {"text": "d"}} for i, s in pairs]}


def test_every_kind_of_wrong_rerank_answer_is_caught() -> None:
    assert check_response("rerank", rerank_answer([2, 0, 1], [0.9, 0.5, 0.1]), 3) is None
    assert "2 results for 3" in check_response("rerank", rerank_answer([2, 0], [0.9, 0.5]), 3)
    assert "not sorted" in check_response("rerank", rerank_answer([2, 0, 1], [0.1, 0.5, 0.9]), 3)
    assert "indices" in check_response("rerank", rerank_answer([2, 2, 1], [0.9, 0.5, 0.1]), 3)
    assert "indices" in check_response("rerank", rerank_answer([0, 1, 3], [0.9, 0.5, 0.1]), 3)
    assert "finite" in check_response("rerank", rerank_answer([0, 1, 2], [float("nan"), 0.5, 0.1]), 3)
    assert check_response("rerank", {"error": {"message": "x"}}, 3) == "no results list"


def test_every_kind_of_wrong_score_answer_is_caught() -> None:
    good = {"data": [{"index": 1, "score": 0.2}, {"index": 0, "score": 0.9}]}
    assert check_response("score", good, 2) is None
    assert "1 scores for 2" in check_response("score", {"data": good["data"][:1]}, 2)
    assert "indices" in check_response("score", {"data": [{"index": 0, "score": 1}, {"index": 0, "score": 1}]}, 2)
    assert "without index" in check_response("score", {"data": [{"index": 0}, {"index": 1, "score": 1}]}, 2)


def test_percentiles_interpolate_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([7.0], 95) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0) == 1.0 and percentile([3.0, 1.0, 2.0], 100) == 3.0


def test_figures_and_ratios_from_a_tally() -> None:
    tally = Tally(latencies=[0.1, 0.2, 0.3, 0.4], errors=1, elapsed=2.0)
    row = LevelResult.from_tally("primary", "u", 4, docs=16, tally=tally)
    assert (row.requests, row.ok, row.errors) == (5, 4, 1)
    assert row.requests_per_s == 2.0 and row.pairs_per_s == 32.0
    assert row.latency_ms_p50 == 250.0 and row.latency_ms_mean == 250.0
    slower = LevelResult.from_tally(
        "compare", "v", 4, docs=16, tally=Tally(latencies=[0.2, 0.4, 0.6, 0.8], elapsed=4.0)
    )
    comparison = compare(row, slower)
    assert (
        comparison.requests_per_s_ratio == 0.5
        and comparison.latency_p50_ratio == 2.0
        and comparison.latency_p50_delta_ms == 250.0
    )
    nothing = LevelResult.from_tally("primary", "u", 1, docs=4, tally=Tally(errors=3, elapsed=1.0))
    assert nothing.latency_ms_p50 is None and nothing.requests_per_s == 0.0
    json.dumps(nothing.__dict__, allow_nan=False)  # valid JSON even when nothing succeeded


def test_workload_is_deterministic_and_sized() -> None:
    workload = Workload("rerank", docs=5, doc_tokens=12)
    bodies = workload.payloads(3, "m")
    assert bodies == workload.payloads(3, "m")
    assert all(
        len(b["documents"]) == 5 and all(len(d.split()) == 12 for d in b["documents"]) and b["model"] == "m"
        for b in bodies
    )
    assert bodies[0]["documents"] != bodies[1]["documents"]
    score = Workload("score", docs=2, doc_tokens=3).payloads(1, None)[0]
    assert set(score) == {"text_1", "text_2"}
    assert [len(part) for part in split(list(range(10)), 2)] == [5, 5]


def bench(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKER_")}
    env.update(HOME=str(tmp_path), COLUMNS="200")
    return subprocess.run([RERANKER, "bench", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_bad_levels_are_a_usage_error(tmp_path: Path) -> None:
    result = bench(["--url", "http://127.0.0.1:9", "--concurrency", "1,x"], tmp_path)
    assert result.returncode == 2 and "1,8,32" in result.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # our self-signed test stack
@pytest.mark.parametrize("ca_bundle", [False, True], ids=["plain-env", "REQUESTS_CA_BUNDLE"])
def test_bench_against_the_local_https_stack(tmp_path: Path, ca_bundle: bool) -> None:
    """Defect 1: with ENABLE_HTTPS the local stack's certificate is self-signed; `reranker bench` (no flags:
    the local stack, its generated token) must not verify it in the benchmark's own clients either. With
    REQUESTS_CA_BUNDLE set (conda, corporate machines), requests used to override the client's verify=False."""
    bundle = {"REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""}
    if ca_bundle:
        import certifi

        bundle = {"REQUESTS_CA_BUNDLE": certifi.where(), "CURL_CA_BUNDLE": certifi.where()}
    gateway = start_gateway(tmp_path, {"ENABLE_HTTPS": "true", **bundle}, https=True)
    upstream = FakeUpstream(gateway.vllm_port).start()
    assert upstream.server is not None
    upstream.server.answer("/v1/models", Reply.json({"object": "list", "data": [{"id": "test-model"}]}))
    try:
        gateway.wait_status("ready", verify=False)
        result = subprocess.run(
            [sys.executable, "-m", "reranker_template.cli", "bench", "--compare", gateway.url]
            + [
                "--concurrency",
                "1,2",
                "--requests",
                "4",
                "--docs",
                "3",
                "--doc-tokens",
                "8",
                "--warmup",
                "1",
                "--json",
            ],
            env=gateway.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        upstream.stop()
        gateway.stop()
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr  # skipping our own certificate's check is deliberate, not news
    report = json.loads(result.stdout)
    assert report["config"]["url"] == gateway.url and report["config"]["model"] == "test-model"
    assert [(row["target"], row["concurrency"]) for row in report["results"]] == [
        ("primary", 1),
        ("compare", 1),
        ("primary", 2),
        ("compare", 2),
    ]
    assert all(row["ok"] == row["requests"] == 4 and row["first_problem"] is None for row in report["results"])


@pytest.mark.vllm
def test_bench_gateway_against_vllm_gives_sane_checked_figures(minilm_stack, tmp_path: Path) -> None:
    result = bench(
        [
            "--url",
            minilm_stack.gateway_url,
            "--token",
            minilm_stack.token,
            "--compare",
            minilm_stack.vllm_url,
            "--concurrency",
            "1,4",
            "--requests",
            "4",
            "--docs",
            "4",
            "--doc-tokens",
            "16",
            "--warmup",
            "1",
            "--json",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["config"]["model"] == "minilm" and report["config"]["endpoint"] == "rerank"
    assert [(r["target"], r["concurrency"]) for r in report["results"]] == [
        ("primary", 1),
        ("compare", 1),
        ("primary", 4),
        ("compare", 4),
    ]
    for row in report["results"]:
        assert set(row) == RESULT_FIELDS
        assert row["ok"] == row["requests"] == 4 and row["errors"] == row["invalid"] == 0, row
        assert row["requests_per_s"] > 0 and row["pairs_per_s"] == pytest.approx(row["requests_per_s"] * 4, rel=0.01)
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p95"] <= row["latency_ms_p99"] < 60_000
        assert row["seconds"] > 0
    assert [c["concurrency"] for c in report["comparisons"]] == [1, 4]
    assert all(c["requests_per_s_ratio"] > 0 and c["latency_p50_ratio"] > 0 for c in report["comparisons"])


@pytest.mark.vllm
def test_bench_table_and_the_score_endpoint(minilm_stack, tmp_path: Path) -> None:
    result = bench(
        [
            "--url",
            minilm_stack.gateway_url,
            "--token",
            minilm_stack.token,
            "--endpoint",
            "score",
            "--concurrency",
            "2",
            "--requests",
            "2",
            "--docs",
            "3",
            "--doc-tokens",
            "8",
            "--warmup",
            "1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    for heading in ("req/s", "pairs/s", "p50 ms", "p95 ms", "p99 ms", "errors"):
        assert heading in result.stdout
    assert "primary" in result.stdout and "score: 3 docs" in result.stdout


@pytest.mark.vllm
def test_bench_with_a_wrong_token_says_so(minilm_stack, tmp_path: Path) -> None:
    result = bench(
        ["--url", minilm_stack.gateway_url, "--token", "wrong", "--requests", "1", "--concurrency", "1"], tmp_path
    )
    assert result.returncode == 1 and "401" in result.stderr and "Traceback" not in result.stderr
