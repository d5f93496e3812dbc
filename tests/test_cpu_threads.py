"""CPU mode: vLLM's worker computes on every core of a small CPU, and vLLM's own binding is kept on a big one.

The rule (plan/cpu_threads.py) over fixed facts, the topology facts read from a /sys tree and compared with
vLLM's own reading of this machine. The running stack's worker threads are checked in test_stack.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.nvidia import plan_on

from reranker_template.facts.machine import CpuInfo, read_cpu_info
from reranker_template.facts.model import ModelInfo, ModelSource
from reranker_template.plan.cpu_threads import cpu_thread_env

CROSS_ENCODER = ModelInfo(
    name="/m",
    source=ModelSource.LOCAL,
    config={"architectures": ["BertForSequenceClassification"], "model_type": "bert", "max_position_embeddings": 512},
)


@pytest.mark.parametrize(
    "cpu,reserved",
    [
        (CpuInfo(cores=2), "0"),  # vLLM would compute on one core of two
        (CpuInfo(cores=8, node_physical_cores=4), "0"),  # 4 cores with SMT: one thread per core
        (CpuInfo(cores=4), "0"),
        (CpuInfo(cores=5), None),  # vLLM's own binding from 5 cores up
        (CpuInfo(cores=64, node_physical_cores=32), None),
        (CpuInfo(cores=1), None),  # nothing to keep back
    ],
)
def test_cpu_mode_computes_on_every_core_of_a_small_cpu(cpu: CpuInfo, reserved: str | None) -> None:
    env, reason = cpu_thread_env(cpu)
    assert env.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == reserved
    assert "VLLM_CPU_OMP_THREADS_BIND" not in env
    assert reason.startswith("CPU threads: ")


@pytest.mark.parametrize(
    "cpu",
    [CpuInfo(cores=2, threads_bind="0"), CpuInfo(cores=2, reserved_cpus="1"), CpuInfo(cores=2, threads_bind="nobind")],
)
def test_a_thread_binding_in_the_environment_is_left_to_the_user(cpu: CpuInfo) -> None:
    env, reason = cpu_thread_env(cpu)
    assert env == {} and "so the binding is left to you" in reason


def test_the_cpu_plan_carries_the_binding_and_a_gpu_plan_none() -> None:
    cpu_plan = plan_on(None, CROSS_ENCODER, cores=2)
    assert cpu_plan.vllm_env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert any(reason.startswith("CPU threads: VLLM_CPU_NUM_OF_RESERVED_CPU=0") for reason in cpu_plan.reasons)
    gpu_plan = plan_on("1xT4", CROSS_ENCODER, cores=2)
    assert gpu_plan.device == "cuda" and not gpu_plan.vllm_env
    assert not any(reason.startswith("CPU threads: ") for reason in gpu_plan.reasons)


# --- the facts -------------------------------------------------------------------------------------------


def fake_topology(root: Path, cpus: dict[int, tuple[int, int, int]]) -> Path:
    """A /sys tree where each allowed CPU id maps to (NUMA node, package, core)."""
    for cpu, (node, package, core) in cpus.items():
        directory = root / "sys/devices/system/cpu" / f"cpu{cpu}"
        (directory / "topology").mkdir(parents=True)
        (directory / f"node{node}").mkdir()
        (directory / "topology/physical_package_id").write_text(f"{package}\n")
        (directory / "topology/core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_on_the_workers_node_are_counted_once_per_core(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    # Two SMT siblings per core on node 0, and one more core on node 1 that vLLM's worker would not use.
    layout = {cpu: (0, 0, i // 2) for i, cpu in enumerate(allowed)}
    if len(allowed) > 1:
        layout[allowed[-1]] = (1, 1, 0)
    cpu = read_cpu_info({}, root=fake_topology(tmp_path, layout))
    on_node_0 = [cpu_id for cpu_id, (node, _, _) in layout.items() if node == 0]
    assert cpu.node_physical_cores == len({layout[c][2] for c in on_node_0})
    assert cpu.cores == len(allowed)


def test_without_a_topology_the_logical_cpus_count(tmp_path: Path) -> None:
    cpu = read_cpu_info({}, root=tmp_path)
    assert cpu.node_physical_cores is None and cpu.worker_cores == cpu.cores


def test_the_users_binding_is_read_from_the_environment(tmp_path: Path) -> None:
    cpu = read_cpu_info({"VLLM_CPU_OMP_THREADS_BIND": "0-3", "VLLM_CPU_NUM_OF_RESERVED_CPU": ""}, root=tmp_path)
    assert (cpu.threads_bind, cpu.reserved_cpus) == ("0-3", None)  # vLLM ignores an empty value too


def test_the_worker_cores_are_the_ones_vllm_binds_on_this_machine() -> None:
    from vllm.utils.cpu_resource_utils import get_allowed_cpu_list

    theirs = get_allowed_cpu_list()
    node = theirs[0].numa_node
    assert read_cpu_info({}).worker_cores == len({cpu.physical_core for cpu in theirs if cpu.numa_node == node})
