"""The plan as a pure function: settings + hardware facts + model facts in, the vLLM command out.

Also the merge of our flags with VLLM_ARGS, the reader of vLLM options it relies on, and the installed
`reranker plan` command end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.nvidia import build_hf_cache, fake_smi_env, inventory_gpus

from reranker_template.errors import PlanError
from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo, ModelSource
from reranker_template.plan import Plan, make_plan
from reranker_template.plan.build import merge_flags
from reranker_template.plan.contract import read_plan, write_plan
from reranker_template.plan.flags import Flag
from reranker_template.plan.user_args import UserArgs, canonical_option
from reranker_template.settings import load_settings

CPU_FP16 = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16", "avx512_fp16"})))
CPU_BF16 = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16"})))
CPU_PLAIN = Hardware(cpu=CpuInfo(cores=2, flags=frozenset({"avx2"})))
RUNTIME = Runtime(python="/venv/bin/python", openmp_library="/venv/lib/libiomp5.so")
MINILM = ModelInfo(
    name="/m",
    source=ModelSource.LOCAL,
    config={"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
)


def plan_for(env: dict[str, str], hardware: Hardware = CPU_FP16, model: ModelInfo = MINILM) -> Plan:
    return make_plan(load_settings({"MODEL_NAME": "/m", **env}), hardware, model, RUNTIME)


def test_plan_json_has_the_documented_keys() -> None:
    data = plan_for({}).to_json()
    for key in (
        "model",
        "served_model_name",
        "preset",
        "device",
        "gpu_count",
        "gpus_used",
        "tensor_parallel_size",
        "data_parallel_size",
        "vllm_command",
        "gateway_port",
        "vllm_port",
        "reasons",
        "max_model_len",
        "score_template",
        "truncation",
        "schema_version",
    ):
        assert key in data
    assert isinstance(data["vllm_command"], list) and isinstance(data["reasons"], list)


def test_vllm_runs_through_python_module_on_loopback() -> None:
    command = plan_for({"VLLM_PORT": "18123"}).vllm_command
    assert command[:3] == ("/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server")
    assert UserArgs(command).value("--host") == "127.0.0.1"
    assert UserArgs(command).value("--port") == "18123"
    assert UserArgs(command).value("--model") == "/m"


def test_cpu_mode_uses_float16_and_intel_openmp_when_the_cpu_has_fp16() -> None:
    plan = plan_for({})
    assert plan.device == "cpu" and plan.gpu_count == 0
    assert UserArgs(plan.vllm_command).value("--dtype") == "float16"
    assert plan.vllm_env["LD_PRELOAD"] == "/venv/lib/libiomp5.so"
    assert any("avx512_fp16" in reason for reason in plan.reasons)


def test_cpu_mode_preloads_tcmalloc_when_installed_and_says_how_to_install_it_otherwise() -> None:
    with_tcmalloc = Runtime(
        python="/venv/bin/python",
        openmp_library="/venv/lib/libiomp5.so",
        tcmalloc_library="/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    )
    plan = make_plan(load_settings({"MODEL_NAME": "/m"}), CPU_PLAIN, MINILM, with_tcmalloc)
    assert plan.vllm_env["LD_PRELOAD"] == "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4:/venv/lib/libiomp5.so"
    without = plan_for({}, hardware=CPU_PLAIN)
    assert any("apt install libtcmalloc-minimal4" in reason for reason in without.reasons)
    assert not any("apt install" in reason for reason in plan.reasons)


def test_cpu_mode_with_bf16_but_no_fp16_uses_bfloat16() -> None:
    assert UserArgs(plan_for({}, hardware=CPU_BF16).vllm_command).value("--dtype") == "bfloat16"


def test_cpu_mode_without_half_precision_instructions_uses_float32() -> None:
    assert UserArgs(plan_for({}, hardware=CPU_PLAIN).vllm_command).value("--dtype") == "float32"


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
    assert UserArgs(plan_for({"SERVED_MODEL_NAME": "rr"}).vllm_command).value("--served-model-name") == "rr"
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
        ("-O3", "--optimization-level"),
        ("-O", "--optimization-level"),
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


def test_user_args_are_parsed_once_and_cannot_be_changed_through_a_lookup() -> None:
    user = UserArgs(("--max-model-len", "512"))
    assert user.options() is user.options()  # parsed in __post_init__, not on every lookup
    with pytest.raises(TypeError):
        user.options()["--max-model-len"] = "1"  # type: ignore[index]  # read-only on purpose
    assert user == UserArgs(("--max-model-len", "512"))  # compared by argv, as before


# --- merging our flags with VLLM_ARGS ------------------------------------------------------------------------

OURS = (
    Flag("--dtype", "float16", "T4 has no bf16"),
    Flag("--enable-prefix-caching", None, "a decoder"),
    Flag("--dtype", "bfloat16", "a later, less specific source"),
)

# (VLLM_ARGS) -> (the argv after --port N, a reason for each decision)
MERGES = [
    (
        (),
        ["--dtype", "float16", "--enable-prefix-caching"],
        ["--dtype float16: T4 has no bf16", "--enable-prefix-caching: a decoder"],
    ),
    (
        ("--dtype=float32",),
        ["--enable-prefix-caching", "--dtype=float32"],
        [
            "--dtype: VLLM_ARGS sets it, so we leave it to you (we would have chosen float16: T4 has no bf16)",
            "--enable-prefix-caching: a decoder",
            "VLLM_ARGS appended as given: --dtype=float32",
        ],
    ),
    (
        ("--enable_prefix_caching", "-tp", "2"),
        ["--dtype", "float16", "--enable_prefix_caching", "-tp", "2"],
        [
            "--dtype float16: T4 has no bf16",
            "--enable-prefix-caching: VLLM_ARGS sets it, so we leave it to you (we would have chosen it: a decoder)",
            "VLLM_ARGS appended as given: --enable_prefix_caching -tp 2",
        ],
    ),
]


@pytest.mark.parametrize(("user", "argv", "reasons"), MERGES)
def test_merge_flags_first_source_wins_and_the_users_flags_win_over_ours(
    user: tuple[str, ...], argv: list[str], reasons: list[str]
) -> None:
    assert merge_flags(OURS, UserArgs(user)) == (argv, reasons)


# --- the package's face and the plan's contract ---------------------------------------------------------


def test_the_plan_package_exports_make_plan_and_plan() -> None:
    import reranker_template.plan as plan_package

    assert plan_package.make_plan is make_plan
    assert plan_package.Plan is Plan
    with pytest.raises(AttributeError):
        plan_package.no_such_name  # noqa: B018


def test_a_plan_survives_plan_json() -> None:
    plan = plan_for({"VLLM_ARGS": "--chat-template /t.jinja", "RERANK_INSTRUCTION": "find"})
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    assert plan.device == "cpu" and plan.model_source == "local"


def test_a_plan_of_another_version_or_a_broken_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    data = plan_for({}).to_json()
    with pytest.raises(PlanError, match="schema version 0.*restart the stack"):
        Plan.from_json({**data, "schema_version": 0})
    with pytest.raises(PlanError, match="malformed.*restart the stack"):
        Plan.from_json({k: v for k, v in data.items() if k != "vllm_command"})
    with pytest.raises(PlanError, match="missing or unreadable"):
        read_plan(tmp_path / "plan.json")
    write_plan(tmp_path / "plan.json", plan_for({}))
    assert read_plan(tmp_path / "plan.json") == plan_for({})
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.slow  # runs `reranker plan` as a process
def test_reranker_plan_command(tmp_path: Path) -> None:
    """The installed command, as a user runs it: a layout, and a one-line error for an impossible one."""
    hub = tmp_path / "hf" / "hub"
    env = {
        **fake_smi_env(tmp_path, "8x4090"),
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1",
        "MODEL_NAME": build_hf_cache(hub, "giant"),
    }
    reranker = Path(sys.executable).parent / "reranker"
    exe = [str(reranker)] if reranker.exists() else [sys.executable, "-m", "reranker_template.cli"]
    result = subprocess.run([*exe, "plan", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["gpu_count"], plan["tensor_parallel_size"], plan["data_parallel_size"]) == (8, 4, 2)

    result = subprocess.run(
        [*exe, "plan", "--json"], env={**env, "PARALLEL_MODE": "dp"}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("reranker: PARALLEL_MODE=dp") and result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "hardware,vllm_args,budget",
    [
        (CPU_PLAIN, "", "2048"),  # a CPU: small forward passes stay in its cache
        (Hardware(gpus=inventory_gpus("1xT4")), "", "8192"),  # a GPU: big batches keep it busy
        (CPU_PLAIN, "--max-model-len 4096", "4096"),  # never below one whole pair
    ],
)
def test_an_encoders_batch_budget_follows_the_device_and_holds_a_pair(
    hardware: Hardware, vllm_args: str, budget: str
) -> None:
    plan = plan_for({"VLLM_ARGS": vllm_args}, hardware=hardware)
    assert UserArgs(plan.vllm_command).value("--max-num-batched-tokens") == budget
