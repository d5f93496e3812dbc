"""CPU mode: whether vLLM's worker computes on every core or leaves one to the processes around it.

vLLM-CPU binds its worker's OpenMP threads to one logical CPU per physical core of a NUMA node and, on
x86 and Arm, keeps one of those cores back (`reserve_cpu_num` in vllm/utils/ompmultiprocessing.py) for
the other processes: its engine core (the scheduler), its API server, and here our gateway. How much
those need grows with the throughput, while the worker's loss is one core out of N:

- Measured on 2 cores with the bundled MiniLM-L12 cross-encoder (BENCHMARKS.md, "CPU throughput against
  the peers"): with one core kept back the worker computes on one core and the other sits ~88% idle
  (6.3 pairs/s); with none kept back, 11.4-13.3 pairs/s, and the engine core, API server and gateway
  together take 5-11% of one core's time, in turns from the worker.
- That share grows with pairs/s, so about 3-6% of a core per core of throughput: up to 4 cores it costs
  the worker less than a whole kept-back core (at 4: 10-22% against 25%); from 5 up a kept-back core costs
  20% or less and keeps the scheduler off the worker's cores.

Rule: fewer than 5 physical cores -> `VLLM_CPU_NUM_OF_RESERVED_CPU=0` (vLLM still chooses the NUMA node
and one thread per physical core; it logs a warning that 0 is below its minimum, which the reason
pre-empts); 5 or more -> vLLM's own binding. A VLLM_CPU_OMP_THREADS_BIND or VLLM_CPU_NUM_OF_RESERVED_CPU
in the stack's environment is the user's choice and is left alone.
"""

from __future__ import annotations

from reranker_template.facts.machine import CpuInfo

# Below this many physical cores, the worker computes on all of them (the module docstring says why).
RESERVE_FROM_CORES = 5


def cpu_thread_env(cpu: CpuInfo) -> tuple[dict[str, str], str]:
    """(environment for vLLM, the reason) for how the worker's threads share this CPU's cores."""
    settings = (("VLLM_CPU_OMP_THREADS_BIND", cpu.threads_bind), ("VLLM_CPU_NUM_OF_RESERVED_CPU", cpu.reserved_cpus))
    user = [f"{name}={value}" for name, value in settings if value is not None]
    if user:
        return {}, f"CPU threads: {' and '.join(user)} set in the environment, so the binding is left to you"
    cores = cpu.worker_cores
    if cores == 1:
        return {}, "CPU threads: one core: vLLM's worker computes on it (there is none to keep back)"
    if cores >= RESERVE_FROM_CORES:
        return {}, (
            f"CPU threads: vLLM's binding: its worker computes on {cores - 1} of {cores} cores, one is kept for its "
            f"scheduler, its API server and the gateway (cheaper than sharing from {RESERVE_FROM_CORES} cores up)"
        )
    return {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}, (
        f"CPU threads: VLLM_CPU_NUM_OF_RESERVED_CPU=0: the worker computes on all {cores} cores instead of "
        f"{cores - 1}; on fewer than {RESERVE_FROM_CORES} cores the scheduler, API server and gateway "
        "cost less than a kept-back core (measured on 2 cores: 1.8x the pairs/s, BENCHMARKS.md); "
        "vLLM logs a warning that this is below its minimum"
    )
