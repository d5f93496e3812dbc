"""Sequence lengths and batching, from the model's facts: --max-model-len, --max-num-batched-tokens, prefix caching.

The rules:
- `--max-model-len` is what the model supports (the smallest of config.json's positions, the tokenizer's
  limit and sentence-transformers' max_seq_length; the family's context when config.json is unknown),
  capped at 8192: a 32k context OOMed Qwen3-Reranker-0.6B on a 16 GB T4. Never above what the model
  supports, because vLLM refuses to start otherwise.
- An embedding model whose sentence_bert_config.json we cannot see keeps vLLM's own derivation (that file
  may set a lower limit, and a larger --max-model-len would stop vLLM at start-up).
- Encoder-only models have no chunked prefill, so one batch must hold a whole pair:
  `--max-num-batched-tokens >= --max-model-len`. Beyond that, on a GPU never below 8192 (vLLM's larger
  default budget: big batches keep a GPU busy); on a CPU never below 2048: a forward pass of 2048 tokens
  keeps each layer's activations in the CPU's last-level cache (12 MiB for MiniLM-L12's widest in float32,
  48 MiB at 8192), and on 2 cores it gave 12.2-12.8 pairs/s against 8.9-10.9 with 8192 and 9.3-10.9 with
  16384 (1024: 12.2-12.6; BENCHMARKS.md, "CPU throughput against the peers").
- Decoder rerankers get `--enable-prefix-caching`: the system prompt, instruction and query repeat across
  one call's documents (not for families whose prompt puts the document first).
A --max-model-len in VLLM_ARGS wins, and the batch budget follows it.
"""

from __future__ import annotations

from reranker_template.facts.model import ModelInfo
from reranker_template.plan.contract import Device
from reranker_template.plan.families import Preset, PresetKind
from reranker_template.plan.flags import Flag
from reranker_template.plan.user_args import UserArgs

DEFAULT_MAX_MODEL_LEN = 8192
# An encoder-only model's smallest batch budget (the module docstring says why), and never below --max-model-len
# (a pair longer than the batch budget could not be scheduled).
ENCODER_MIN_BATCHED_TOKENS = {Device.CUDA: 8192, Device.CPU: 2048}
# RoBERTa-style models count two position slots for padding: 514 positions hold 512 tokens.
_PADDING_OFFSET_MODEL_TYPES = ("roberta", "xlm-roberta", "camembert")


def _max_len_of(model: ModelInfo, preset: Preset | None) -> tuple[int | None, str]:
    """What the model supports, and where that number comes from (None when nothing says)."""
    limits: list[tuple[int, str]] = []
    positions = model.max_position_embeddings
    if positions:
        if (model.model_type or "") in _PADDING_OFFSET_MODEL_TYPES:
            limits.append((positions - 2, f"max_position_embeddings {positions} - 2 (RoBERTa padding offset)"))
        else:
            limits.append((positions, f"max_position_embeddings {positions}"))
    if model.tokenizer_max_length:
        limits.append((model.tokenizer_max_length, f"the tokenizer's model_max_length {model.tokenizer_max_length}"))
    st_len = model.sentence_transformers_max_seq_length
    if st_len:
        limits.append((st_len, f"sentence_bert_config.json's max_seq_length {st_len}"))
    if not limits and preset is not None and preset.context_hint:
        limits.append((preset.context_hint, f"{preset.family} supports {preset.context_hint} tokens"))
    if not limits:
        return None, ""
    return min(limits)


def _is_decoder(model: ModelInfo, preset: Preset | None) -> bool | None:
    if model.model_type:
        return not model.is_encoder_only
    return preset.decoder_hint if preset else None


def _max_model_len(model: ModelInfo, preset: Preset | None) -> tuple[Flag | None, str | None]:
    """Our --max-model-len (None: left to vLLM), or the reason we set none."""
    supported, source = _max_len_of(model, preset)
    if supported is None:
        return None, "--max-model-len: the model's length limit is unknown (no config.json), so vLLM derives it"
    if (
        preset is not None
        and preset.kind is PresetKind.EMBEDDING
        and model.sentence_transformers_max_seq_length is None
        and not model.local_dir
    ):
        return None, (
            "--max-model-len: left to vLLM (an embedding model's sentence_bert_config.json may set a lower limit "
            "than we can see)"
        )
    chosen = min(DEFAULT_MAX_MODEL_LEN, supported)
    capped = (
        f", capped at {DEFAULT_MAX_MODEL_LEN} to bound memory (set --max-model-len in VLLM_ARGS for more)"
        if supported > DEFAULT_MAX_MODEL_LEN
        else ""
    )
    return Flag("--max-model-len", str(chosen), source + capped), None


def length_flags(
    model: ModelInfo, preset: Preset | None, user: UserArgs, device: Device
) -> tuple[list[Flag], list[str]]:
    """--max-model-len, --max-num-batched-tokens and prefix caching, from the model's facts and the device
    (rules above)."""
    flags: list[Flag] = []
    reasons: list[str] = []
    max_len, why_none = _max_model_len(model, preset)
    user_len = user.int_value("--max-model-len")
    if max_len is not None:
        flags.append(max_len)
        user_len = user_len or int(max_len.value or 0)
    if why_none:
        reasons.append(why_none)
    decoder = _is_decoder(model, preset)
    if decoder is False:
        floor = ENCODER_MIN_BATCHED_TOKENS[device]
        why = "encoder-only models have no chunked prefill: one batch must hold a whole pair (>= --max-model-len)"
        if device is Device.CPU:
            why += f"; at least {floor} on a CPU, where smaller forward passes stay in its cache (BENCHMARKS.md)"
        flags.append(Flag("--max-num-batched-tokens", str(max(user_len or 0, floor)), why))
    elif decoder and (preset is None or (preset.kind is not PresetKind.EMBEDDING and preset.prefix_caching)):
        flags.append(
            Flag(
                "--enable-prefix-caching",
                None,
                "decoder reranker: the system prompt, instruction and query repeat across the documents of one call",
            )
        )
    return flags, reasons
