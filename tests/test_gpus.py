"""GPU detection: what nvidia-smi reports, narrowed to the GPUs CUDA will actually use.

nvidia-smi is stood in for by tests/support/fake_nvidia_smi (first on PATH); everything else is real.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.nvidia import INVENTORIES, fake_smi_env, inventory_gpus

from reranker_template.facts.gpus import (
    Gpu,
    GpuSource,
    detect_gpus,
    filter_visible,
    p2p_between,
    parse_nvidia_smi,
    parse_p2p_matrix,
)
from reranker_template.facts.machine import detect_hardware
from reranker_template.plan.contract import Device

# Output captured from real nvidia-smi (2x A100 with NVLink, then a 4090 pair whose driver disables P2P).
REAL_TOPO_NVLINK = """ \tGPU0\tGPU1\t
 GPU0\tX\tOK\t
 GPU1\tOK\tX\t

Legend:

  X    = Self
  OK   = Status Ok
  CNS  = Chipset not supported
  GNS  = GPU not supported
  TNS  = Topology not supported
  NS   = Not supported
  U    = Unknown
"""
REAL_TOPO_NO_P2P = REAL_TOPO_NVLINK.replace("\tOK\t", "\tCNS\t").replace("OK\tX", "CNS\tX")


Smi = Callable[..., dict[str, str]]


@pytest.fixture
def smi(tmp_path: Path) -> Smi:
    """Install the fake nvidia-smi; returns a function that sets the inventory and the environment to use."""

    def make(
        name: str, memory_mib: int, capability: str, count: int, p2p: str | None = "OK", **env: str
    ) -> dict[str, str]:
        card = {"name": name, "memory_mib": memory_mib, "compute_cap": capability, "count": count}
        return {**fake_smi_env(tmp_path, {"gpus": [card], "p2p": p2p}), **env}

    return make


@pytest.mark.parametrize(
    ("name", "memory_mib", "capability", "count"),
    [
        ("Tesla T4", 15360, "7.5", 1),
        ("NVIDIA L4", 23034, "8.9", 2),
        ("NVIDIA A10", 23028, "8.6", 3),
        ("NVIDIA A100-SXM4-80GB", 81920, "8.0", 4),
        ("NVIDIA GeForce RTX 4090", 24564, "8.9", 8),
    ],
)
@pytest.mark.slow  # runs the fake nvidia-smi
def test_inventory_from_nvidia_smi(smi: Smi, name: str, memory_mib: int, capability: str, count: int) -> None:
    gpus, source = detect_gpus(smi(name, memory_mib, capability, count))
    assert source is GpuSource.NVIDIA_SMI
    assert [g.index for g in gpus] == list(range(count))
    assert {g.name for g in gpus} == {name}
    assert {g.memory_mib for g in gpus} == {memory_mib}
    assert {g.compute_capability for g in gpus} == {float(capability)}
    assert all(g.uuid.startswith("GPU-") for g in gpus)


@pytest.mark.slow  # runs the fake nvidia-smi
def test_p2p_matrix_is_read_for_several_gpus(smi: Smi) -> None:
    gpus, _ = detect_gpus(smi("NVIDIA A100-SXM4-80GB", 81920, "8.0", 4, p2p="OK"))
    assert gpus[0].p2p_peers == (1, 2, 3)
    assert p2p_between(gpus)[0] is True

    gpus, _ = detect_gpus(smi("NVIDIA GeForce RTX 4090", 24564, "8.9", 2, p2p="CNS"))
    assert gpus[0].p2p_peers == ()
    ok, why = p2p_between(gpus)
    assert not ok and "GPU0 and GPU1" in why


@pytest.mark.slow  # runs the fake nvidia-smi
def test_topology_failure_falls_back_to_card_names(smi: Smi) -> None:
    gpus, _ = detect_gpus(smi("NVIDIA L4", 23034, "8.9", 2, p2p=None))
    assert gpus[0].p2p_peers is None
    assert p2p_between(gpus)[0] is False
    gpus, _ = detect_gpus(smi("NVIDIA H100 80GB HBM3", 81559, "9.0", 2, p2p=None))
    assert p2p_between(gpus)[0] is True


@pytest.mark.parametrize(
    ("name", "has_p2p"),
    [
        ("Tesla T4", False),
        ("NVIDIA L4", False),
        ("NVIDIA GeForce RTX 4090", False),
        ("NVIDIA RTX A6000", False),
        ("NVIDIA L40S", True),
        ("NVIDIA A100-SXM4-80GB", True),
        ("NVIDIA A10", True),
    ],
)
def test_p2p_by_name_without_a_matrix(name: str, has_p2p: bool) -> None:
    pair = [Gpu(index=i, name=name, memory_mib=1, compute_capability=8.0) for i in range(2)]
    assert p2p_between(pair)[0] is has_p2p


@pytest.mark.slow  # runs the fake nvidia-smi
def test_cuda_visible_devices_keeps_those_gpus_in_its_order(smi: Smi) -> None:
    gpus, _ = detect_gpus(smi("NVIDIA A100-SXM4-80GB", 81920, "8.0", 4, CUDA_VISIBLE_DEVICES="3,1"))
    assert [g.index for g in gpus] == [3, 1]
    # The P2P matrix is read for the host's numbering and still applies to the kept GPUs.
    assert gpus[0].p2p_peers == (0, 1, 2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1,3", [1, 3]),
        ("", []),
        ("-1", []),
        ("all", [0, 1, 2, 3]),
        ("0,7,2", [0]),  # CUDA stops at the first index that does not exist
        ("GPU-00000002", [2]),  # a UUID prefix, as CUDA accepts
    ],
)
@pytest.mark.slow  # runs the fake nvidia-smi
def test_cuda_visible_devices_values(smi: Smi, value: str, expected: list[int]) -> None:
    gpus, _ = detect_gpus(smi("NVIDIA A100-SXM4-80GB", 81920, "8.0", 4, CUDA_VISIBLE_DEVICES=value))
    assert [g.index for g in gpus] == expected


@pytest.mark.slow  # runs the fake nvidia-smi
def test_nvidia_visible_devices_indices_are_already_applied_by_the_container_runtime(smi: Smi) -> None:
    """Inside a container started with NVIDIA_VISIBLE_DEVICES=1,3 nvidia-smi lists two GPUs, numbered 0 and 1."""
    gpus, _ = detect_gpus(smi("NVIDIA L4", 23034, "8.9", 2, NVIDIA_VISIBLE_DEVICES="1,3"))
    assert [g.index for g in gpus] == [0, 1]
    gpus, _ = detect_gpus(smi("NVIDIA L4", 23034, "8.9", 2, NVIDIA_VISIBLE_DEVICES="void"))
    assert gpus == []


def test_gpu_count_is_a_fallback_only(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}  # no nvidia-smi
    gpus, source = detect_gpus(env, gpu_count_hint=2)
    assert source is GpuSource.GPU_COUNT
    assert [(g.index, g.memory_mib) for g in gpus] == [(0, 0), (1, 0)]
    assert detect_gpus(env) == ([], GpuSource.NONE)


@pytest.mark.slow  # runs the fake nvidia-smi
def test_failing_nvidia_smi_means_no_gpu(smi: Smi) -> None:
    env = smi("NVIDIA L4", 23034, "8.9", 1)
    del env["FAKE_NVIDIA_SMI_INVENTORY"]  # the fake then fails like a host without a driver
    assert detect_gpus(env) == ([], GpuSource.NONE)


@pytest.mark.slow  # runs the fake nvidia-smi
def test_hardware_reports_cuda_only_with_gpus(smi: Smi) -> None:
    hardware = detect_hardware(smi("Tesla T4", 15360, "7.5", 1))
    assert hardware.device is Device.CUDA and hardware.gpu_source is GpuSource.NVIDIA_SMI
    no_gpu = detect_hardware({"PATH": "/nonexistent"})
    assert no_gpu.device is Device.CPU and no_gpu.gpu_source is GpuSource.NONE


def test_parsers_accept_real_output() -> None:
    gpus = parse_nvidia_smi(
        "0, NVIDIA A100-SXM4-80GB, 81920, 8.0, GPU-abc\n1, NVIDIA A100-SXM4-80GB, 81920, [N/A], GPU-def\n"
    )
    assert [(g.index, g.compute_capability) for g in gpus] == [(0, 8.0), (1, 0.0)]
    assert parse_p2p_matrix(REAL_TOPO_NVLINK) == {0: (1,), 1: (0,)}
    assert parse_p2p_matrix(REAL_TOPO_NO_P2P) == {0: (), 1: ()}
    assert parse_p2p_matrix("Topology is not supported") == {}
    assert filter_visible(gpus, {"CUDA_VISIBLE_DEVICES": "1"}) == [gpus[1]]


@pytest.mark.parametrize("inventory", sorted(INVENTORIES))
@pytest.mark.parametrize("matrix", [True, False], ids=["p2p matrix", "no p2p matrix"])
@pytest.mark.slow  # runs the fake nvidia-smi
def test_the_planning_tests_facts_are_what_nvidia_smi_reports(tmp_path: Path, inventory: str, matrix: bool) -> None:
    """The pure planning tests plan on `inventory_gpus`: it must equal what detection finds on that box."""
    data = INVENTORIES[inventory] if matrix else {**INVENTORIES[inventory], "p2p": None}
    gpus, _ = detect_gpus(fake_smi_env(tmp_path, data))
    assert tuple(gpus) == inventory_gpus(inventory, p2p_matrix=matrix)
