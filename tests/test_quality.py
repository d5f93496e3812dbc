"""The boot-time known-answer check: its verdict, the cause it names, and a run against real vLLM.

The end-to-end "fails without the template, passes with it" pair lives in test_correctness.py, which serves
the tiny Qwen3-Reranker both ways.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
from support.loopback import LoopbackServer, Reply, Request, free_port
from support.stack_runner import RunningStack

from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo, ModelSource
from reranker_template.plan import Plan, make_plan
from reranker_template.plan.contract import read_plan
from reranker_template.serve.quality import TRIPLES, judge, likely_cause, run_quality_check
from reranker_template.settings import load_settings

N = len(TRIPLES)


def scores(right: int) -> dict[int, float]:
    """The first `right` triples ordered correctly, the rest reversed."""
    out: dict[int, float] = {}
    for k in range(N):
        out[2 * k], out[2 * k + 1] = (0.9, 0.1) if k < right else (0.1, 0.9)
    return out


def test_all_right_passes_and_one_miss_is_tolerated() -> None:
    assert judge(scores(N)).state == "passed"
    assert judge(scores(N - 1)).state == "passed"  # an English-only model may miss one language


def test_chance_level_fails_and_names_the_wrong_queries() -> None:
    outcome = judge(scores(N - 3))
    assert outcome.state == "failed"
    assert f"{N - 3}/{N}" in outcome.detail and TRIPLES[-1][1] in outcome.detail


def test_ties_are_not_a_pass() -> None:
    """A model that ignores the document (same score for both) must fail, not pass."""
    assert judge({i: 0.5 for i in range(2 * N)}).state == "failed"


def test_the_set_covers_several_languages() -> None:
    assert {t[0] for t in TRIPLES} >= {"en", "de", "fr", "es", "zh"}


CPU = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16"})))
RUNTIME = Runtime(python="/venv/bin/python")
QWEN3 = ModelInfo(
    name="Qwen/Qwen3-Reranker-0.6B",
    source=ModelSource.HUB,
    config={"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960},
)
MINILM = ModelInfo(
    name="/m",
    source=ModelSource.LOCAL,
    config={"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
)
CROSS_ENCODER = ModelInfo(
    name="/my-cross-encoder",
    source=ModelSource.LOCAL,
    config={"architectures": ["BertForSequenceClassification"], "model_type": "bert", "max_position_embeddings": 512},
)
YES_NO = '{"is_original_qwen3_reranker":true,"classifier_from_token":["no","yes"]}'


def planned(model: ModelInfo, **env: str) -> Plan:
    """The plan `reranker serve` would make for this model and these settings."""
    return make_plan(load_settings({"MODEL_NAME": model.name, **env}), CPU, model, RUNTIME)


@pytest.mark.parametrize(
    ("model", "env", "expected"),
    [
        # yes/no scoring forced by hand, without the preset's template: the classic broken Qwen3 set-up
        (
            QWEN3,
            {"RERANKER_PRESET": "none", "VLLM_ARGS": f"--runner pooling --hf-overrides '{YES_NO}'"},
            "score template is missing",
        ),
        (CROSS_ENCODER, {"RERANKER_PRESET": "none"}, "RERANKER_PRESET=<name>"),
        (MINILM, {}, "embedding model"),
        (QWEN3, {}, "may not fit"),  # the preset's flags and template are there: the checkpoint may differ
    ],
)
def test_the_likely_cause_is_named(model: ModelInfo, env: dict[str, str], expected: str) -> None:
    assert expected in likely_cause(planned(model, **env))


def plan_with(preset: str | None, vllm_command: list[str]) -> Plan:
    """A plan whose model is served under `preset` (for the checks that only need a port and a name)."""
    plan = planned(CROSS_ENCODER, RERANKER_PRESET="none")
    return dataclasses.replace(plan, preset=preset, vllm_command=(*plan.vllm_command, *vllm_command))


def test_quality_check_false_skips() -> None:
    plan = dataclasses.replace(plan_with(None, []), vllm_port=free_port())
    outcome = run_quality_check(load_settings({"QUALITY_CHECK": "false"}), plan)
    assert outcome.state == "skipped" and "QUALITY_CHECK=false" in outcome.detail


def test_nothing_listening_is_skipped_not_failed() -> None:
    outcome = run_quality_check(load_settings({}), dataclasses.replace(plan_with(None, []), vllm_port=free_port()))
    assert outcome.state == "skipped" and "could not score" in outcome.detail


def stand_in_vllm(meaningful: bool) -> LoopbackServer:
    """vLLM's /v1/score on loopback: relevant documents score high (or, for broken flags, low)."""
    relevant = {triple[2] for triple in TRIPLES}

    def score(request: Request) -> Reply:
        body = request.json()
        data = [
            {"index": i, "object": "score", "score": 0.9 if (doc in relevant) == meaningful else 0.1}
            for i, doc in enumerate(body["text_2"])
        ]
        return Reply.json({"id": "score-1", "model": body["model"], "data": data})

    return LoopbackServer().answer("/v1/score", score)


def test_the_check_asks_vllm_on_loopback_without_a_token(caplog: pytest.LogCaptureFixture) -> None:
    with stand_in_vllm(meaningful=True) as vllm, caplog.at_level(logging.INFO, logger="reranker.quality"):
        plan = dataclasses.replace(plan_with("bge", []), vllm_port=vllm.port, served_model_name="served")
        outcome = run_quality_check(load_settings({}), plan)
    assert outcome.state == "passed" and outcome.detail == f"{N}/{N} known-answer pairs ranked correctly"
    assert len(vllm.requests) == N
    for request, triple in zip(vllm.requests, TRIPLES, strict=True):
        assert request.path == "/v1/score" and "authorization" not in {h.lower() for h in request.headers}
        assert request.json() == {"model": "served", "text_1": triple[1], "text_2": [triple[2], triple[3]]}
    assert "known-answer pairs ranked correctly" in caplog.text


def test_meaningless_scores_fail_with_a_warning_and_the_likely_cause(caplog: pytest.LogCaptureFixture) -> None:
    with stand_in_vllm(meaningful=False) as vllm, caplog.at_level(logging.INFO, logger="reranker.quality"):
        outcome = run_quality_check(load_settings({}), dataclasses.replace(plan_with(None, []), vllm_port=vllm.port))
    assert outcome.state == "failed" and "Likely cause: no preset matched" in outcome.detail
    assert "WARNING: relevant documents do NOT outrank irrelevant ones" in caplog.text


def test_an_error_answer_is_skipped_not_failed() -> None:
    with LoopbackServer().answer("/v1/score", Reply.json({"error": {"message": "boom"}}, status=500)) as vllm:
        outcome = run_quality_check(load_settings({}), dataclasses.replace(plan_with(None, []), vllm_port=vllm.port))
    assert outcome.state == "skipped" and "boom" in outcome.detail


@pytest.mark.vllm
def test_real_embedding_model_passes(minilm_stack: RunningStack, caplog: pytest.LogCaptureFixture) -> None:
    """all-MiniLM-L6-v2 ranks the known answers right (its cosine scores are meaningful), in about a second."""
    import time

    plan = read_plan(minilm_stack.state_dir / "plan.json")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="reranker.quality"):
        outcome = run_quality_check(load_settings({}), plan)
    took = time.monotonic() - started
    assert outcome.state == "passed", outcome
    assert took < 5, f"the check took {took:.1f} s"
    assert "known-answer pairs ranked correctly" in caplog.text
