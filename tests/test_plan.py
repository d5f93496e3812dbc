"""The plan as a pure function: settings + hardware facts + model facts in, the vLLM command out."""

from __future__ import annotations

import pytest

from reranker_template.errors import PlanError
from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.build import make_plan
from reranker_template.plan.user_args import UserArgs, canonical_option
from reranker_template.settings import load_settings

CPU_FP16 = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16", "avx512_fp16"})))
CPU_BF16 = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16"})))
CPU_PLAIN = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx2"})))
RUNTIME = Runtime(python="/venv/bin/python", openmp_library="/venv/lib/libiomp5.so")
MINILM = ModelInfo(
    name="/m",
    source="local",
    config={"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
)


def plan_for(env: dict[str, str], hardware: Hardware = CPU_FP16, model: ModelInfo = MINILM):
    return make_plan(load_settings({"MODEL_NAME": "/m", **env}), hardware, model, RUNTIME)


def option_value(command: tuple[str, ...], option: str) -> str | None:
    return command[command.index(option) + 1] if option in command else None


def test_plan_json_has_the_documented_keys() -> None:
    data = plan_for({}).to_json()
    for key in (
        "model",
        "served_model_name",
        "preset",
        "device",
        "gpu_count",
        "tensor_parallel_size",
        "data_parallel_size",
        "vllm_command",
        "gateway_port",
        "vllm_port",
        "reasons",
    ):
        assert key in data
    assert isinstance(data["vllm_command"], list) and isinstance(data["reasons"], list)


def test_vllm_runs_through_python_module_on_loopback() -> None:
    command = plan_for({"VLLM_PORT": "18123"}).vllm_command
    assert command[:3] == ("/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server")
    assert option_value(command, "--host") == "127.0.0.1"
    assert option_value(command, "--port") == "18123"
    assert option_value(command, "--model") == "/m"


def test_cpu_mode_uses_float16_and_intel_openmp_when_the_cpu_has_fp16() -> None:
    plan = plan_for({})
    assert plan.device == "cpu" and plan.gpu_count == 0
    assert option_value(plan.vllm_command, "--dtype") == "float16"
    assert plan.vllm_env["LD_PRELOAD"] == "/venv/lib/libiomp5.so"
    assert any("avx512_fp16" in reason for reason in plan.reasons)


def test_cpu_mode_with_bf16_but_no_fp16_uses_bfloat16() -> None:
    assert option_value(plan_for({}, hardware=CPU_BF16).vllm_command, "--dtype") == "bfloat16"


def test_cpu_mode_without_half_precision_instructions_uses_float32() -> None:
    assert option_value(plan_for({}, hardware=CPU_PLAIN).vllm_command, "--dtype") == "float32"


@pytest.mark.parametrize("spelling", ["--dtype float32", "--dtype=float32", "--dtype float32 --dtype float32"])
def test_user_flag_wins_over_ours(spelling: str) -> None:
    plan = plan_for({"VLLM_ARGS": spelling})
    dtype_positions = [i for i, token in enumerate(plan.vllm_command) if token.startswith("--dtype")]
    values = [
        plan.vllm_command[i].split("=", 1)[1] if "=" in plan.vllm_command[i] else plan.vllm_command[i + 1]
        for i in dtype_positions
    ]
    assert set(values) == {"float32"}
    assert any("VLLM_ARGS sets it" in reason for reason in plan.reasons)


def test_served_model_name_from_settings_and_from_user_args() -> None:
    assert option_value(plan_for({"SERVED_MODEL_NAME": "rr"}).vllm_command, "--served-model-name") == "rr"
    plan = plan_for({"VLLM_ARGS": "--served-model-name mine"})
    assert plan.served_model_name == "mine"


@pytest.mark.parametrize(
    "args,message",
    [
        ("--host 0.0.0.0", "vLLM must stay on 127.0.0.1"),
        ("--host=0.0.0.0", "vLLM must stay on 127.0.0.1"),
        ("--port 9999", "set VLLM_PORT instead"),
        ("--model other", "set MODEL_NAME instead"),
        ("--api-key abc", "set API_KEYS"),
    ],
)
def test_options_that_would_break_the_stack_are_refused(args: str, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan_for({"VLLM_ARGS": args})


def test_loopback_host_in_user_args_is_allowed() -> None:
    assert plan_for({"VLLM_ARGS": "--host 127.0.0.1"}).vllm_command.count("--host") == 2


@pytest.mark.parametrize(
    "token,canonical",
    [
        ("--max_model_len=5", "--max-model-len"),
        ("-tp", "--tensor-parallel-size"),
        ("-dp", "--data-parallel-size"),
        ("-O3", "--compilation-config"),
        ("5", None),
        ("-1", None),
    ],
)
def test_option_spellings(token: str, canonical: str | None) -> None:
    assert canonical_option(token) == canonical


def test_user_args_values() -> None:
    user = UserArgs(("-tp", "2", "--enforce-eager", "--max_model_len=512", "--hf-overrides", '{"a":1}'))
    assert user.int_value("--tensor-parallel-size") == 2
    assert user.value("--max-model-len") == "512"
    assert user.has("--enforce-eager") and user.value("--enforce-eager") is None
    assert user.value("--hf-overrides") == '{"a":1}'
