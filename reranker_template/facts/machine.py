"""The machine the stack runs on: GPUs (see gpus.py), CPU features, memory, and runtime facts for the plan.

Only facts live here; decisions based on them are made in plan/, as pure functions.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from reranker_template.facts.gpus import Gpu, GpuSource, detect_gpus
from reranker_template.plan.contract import Device

# CPU flags that give half-precision arithmetic in hardware; without them it is emulated and slow.
FP16_CPU_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class CpuInfo:
    """The CPUs this process may run on, their instruction set, and how vLLM-CPU will bind its threads."""

    cores: int  # logical CPUs this process may run on
    flags: frozenset[str] = frozenset()
    # Physical cores among them on the NUMA node vLLM-CPU binds its worker to: its worker runs one OpenMP
    # thread per physical core there (vllm/utils/ompmultiprocessing.py). None: not observed (use `cores`).
    node_physical_cores: int | None = None
    # The stack's own VLLM_CPU_OMP_THREADS_BIND / VLLM_CPU_NUM_OF_RESERVED_CPU: the user's binding, if any.
    threads_bind: str | None = None
    reserved_cpus: str | None = None

    @property
    def worker_cores(self) -> int:
        """The cores vLLM's worker computes on before any is reserved."""
        return self.node_physical_cores or self.cores

    @property
    def has_fp16(self) -> bool:
        return bool(self.flags & FP16_CPU_FLAGS)

    @property
    def has_bf16(self) -> bool:
        return bool(self.flags & BF16_CPU_FLAGS)


@dataclass(frozen=True)
class Runtime:
    """How vLLM is launched on this machine (the Python that has vLLM, libraries to preload)."""

    python: str = sys.executable
    openmp_library: str | None = None  # Intel OpenMP shipped with vllm-cpu: much faster than GNU OpenMP
    tcmalloc_library: str | None = None


@dataclass(frozen=True)
class CpuMemory:
    """The memory vLLM-CPU sees when it starts, counted exactly as vLLM 0.32 counts it.

    vLLM binds its worker to the NUMA node of the first CPU it may run on and reads that node's meminfo
    (`vllm/utils/cpu_resource_utils.py`, `get_memory_node_info`): total is MemTotal; available is
    MemFree + Active(file) + Inactive(file) + SReclaimable (page cache counts as available). Without a
    node meminfo it uses psutil's whole-machine figures. A cgroup memory limit below the total clamps
    both: total becomes the limit, available at most limit - usage (which counts the cgroup's page cache).
    """

    node: int
    total_bytes: int
    available_bytes: int
    source: str  # where the figures come from, e.g. "/sys/devices/system/node/node0/meminfo"
    # VLLM_CPU_KVCACHE_SPACE in the stack's environment: vLLM reads it itself (whole GiB of KV cache), and it
    # overrides --kv-cache-memory-bytes and --gpu-memory-utilization.
    kvcache_space: str | None = None


VLLM_MQ_DEFAULT_CHUNK_MIB = 16  # vLLM's default VLLM_MQ_MAX_CHUNK_BYTES_MB


@dataclass(frozen=True)
class SharedMemory:
    """/dev/shm as vLLM-CPU's worker queues will find it (plan/shared_memory.py states the rule)."""

    free_bytes: int
    # VLLM_MQ_MAX_CHUNK_BYTES_MB in the stack's environment: the broadcast queue's chunk.
    broadcast_chunk_mib: int = VLLM_MQ_DEFAULT_CHUNK_MIB


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[Gpu, ...] = ()
    cpu: CpuInfo = field(default_factory=lambda: CpuInfo(cores=1))
    gpu_source: GpuSource = GpuSource.NONE
    memory: CpuMemory | None = None  # None: not observed (the plan then sizes vLLM's memory without a check)
    shared_memory: SharedMemory | None = None  # None: not observed (no /dev/shm): not checked

    @property
    def device(self) -> Device:
        """CUDA with at least one GPU, else CPU mode."""
        return Device.CUDA if self.gpus else Device.CPU


def _allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _node_physical_cores(cpus: list[int], root: Path) -> int | None:
    """Distinct physical cores among `cpus` on the first CPU's NUMA node, read from sysfs as vLLM reads
    them (lscpu's CORE and NODE columns); None when the topology is not exposed."""
    system = root / "sys/devices/system/cpu"
    node = _first_cpu_node(root)
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        directory = system / f"cpu{cpu}"
        nodes = [link.name for link in directory.glob("node[0-9]*")]
        if nodes and nodes[0] != f"node{node}":
            continue
        try:
            package = (directory / "topology/physical_package_id").read_text().strip()
            core = (directory / "topology/core_id").read_text().strip()
        except OSError:
            return None
        cores.add((package, core))
    return len(cores) or None


def read_cpu_info(
    env: Mapping[str, str] | None = None, cpuinfo: Path = Path("/proc/cpuinfo"), root: Path = Path("/")
) -> CpuInfo:
    """The CPU facts (see CpuInfo); `root` is "/" except in tests."""
    env = os.environ if env is None else env
    flags: frozenset[str] = frozenset()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = frozenset(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    cpus = _allowed_cpus()
    return CpuInfo(
        cores=len(cpus),
        flags=flags,
        node_physical_cores=_node_physical_cores(cpus, root),
        threads_bind=env.get("VLLM_CPU_OMP_THREADS_BIND") or None,
        reserved_cpus=env.get("VLLM_CPU_NUM_OF_RESERVED_CPU") or None,
    )


def find_runtime(prefixes: tuple[Path, ...] | None = None) -> Runtime:
    """The Python that runs vLLM and the libraries to preload beside it.

    pip puts intel-openmp's libiomp5.so in `<data prefix>/lib`: the venv's own prefix, or /usr/local for
    a Debian system Python (the CPU image), whose sys.prefix is /usr.
    """
    if prefixes is None:
        prefixes = (Path(sysconfig.get_path("data")), Path(sys.prefix))
    openmp = next((str(p) for p in (prefix / "lib" / "libiomp5.so" for prefix in prefixes) if p.exists()), None)
    tcmalloc_candidates = [
        Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"),
        Path("/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4"),
    ]
    tcmalloc = next((str(p) for p in tcmalloc_candidates if p.exists()), None)
    return Runtime(
        python=sys.executable,
        openmp_library=openmp,
        tcmalloc_library=tcmalloc,
    )


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # missing, or "max" (no limit)
        return None


def _first_cpu_node(root: Path) -> int:
    """The NUMA node of the first CPU this process may run on (vLLM binds its worker there)."""
    cpus = _allowed_cpus()
    for link in (root / "sys/devices/system/cpu" / f"cpu{cpus[0] if cpus else 0}").glob("node[0-9]*"):
        return int(link.name[4:])
    return 0


def _cgroup_limit_and_usage(root: Path) -> tuple[int | None, int | None]:
    """The cgroup's memory limit and usage (v2, else v1), as vLLM reads them; (None, None) without a limit."""
    cgroup = root / "sys/fs/cgroup"
    limit = _int_file(cgroup / "memory.max")
    if limit is not None:
        return limit, _int_file(cgroup / "memory.current")
    limit = _int_file(cgroup / "memory/memory.limit_in_bytes")
    if limit is not None and limit < 1 << 62:  # v1 writes a huge sentinel when there is no limit
        return limit, _int_file(cgroup / "memory/memory.usage_in_bytes")
    return None, None


def read_cpu_memory(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> CpuMemory:
    """The node's memory as vLLM-CPU counts it at start-up (see CpuMemory); `root` is "/" except in tests."""
    env = os.environ if env is None else env
    node = _first_cpu_node(root)
    meminfo = root / f"sys/devices/system/node/node{node}/meminfo"
    try:
        # Lines look like "Node 0 MemTotal:       14509852 kB".
        rows = (line.split() for line in meminfo.read_text().splitlines())
        fields = {row[2].rstrip(":"): int(row[3]) * 1024 for row in rows if len(row) >= 4}
        total = fields["MemTotal"]
        available = fields["MemFree"] + fields["Active(file)"] + fields["Inactive(file)"] + fields["SReclaimable"]
        source = "/" + meminfo.relative_to(root).as_posix()
    except (OSError, KeyError, IndexError, ValueError):
        machine = psutil.virtual_memory()
        total, available, source = machine.total, machine.available, "the whole machine (no NUMA node meminfo)"
    limit, usage = _cgroup_limit_and_usage(root)
    if limit is not None and limit < total:
        total = limit
        available = max(0, min(available, limit - (usage or 0)))
        source += ", clamped to the cgroup's memory limit"
    return CpuMemory(
        node=node,
        total_bytes=total,
        available_bytes=available,
        source=source,
        kvcache_space=env.get("VLLM_CPU_KVCACHE_SPACE") or None,
    )


def read_shared_memory(env: Mapping[str, str], shm: Path = Path("/dev/shm")) -> SharedMemory | None:
    """Free space in /dev/shm, as vLLM's check measures it (shutil.disk_usage), or None without one."""
    try:
        free = shutil.disk_usage(shm).free
    except OSError:
        return None
    try:
        chunk = int(env.get("VLLM_MQ_MAX_CHUNK_BYTES_MB", VLLM_MQ_DEFAULT_CHUNK_MIB))
    except ValueError:
        chunk = VLLM_MQ_DEFAULT_CHUNK_MIB  # vLLM itself fails on such a value, with its own message
    return SharedMemory(free_bytes=free, broadcast_chunk_mib=chunk)


def detect_hardware(env: Mapping[str, str] | None = None, gpu_count_hint: int | None = None) -> Hardware:
    env = os.environ if env is None else env
    gpus, source = detect_gpus(env, gpu_count_hint)
    return Hardware(
        gpus=tuple(gpus),
        cpu=read_cpu_info(env),
        gpu_source=source,
        memory=read_cpu_memory(env),
        shared_memory=read_shared_memory(env),
    )
