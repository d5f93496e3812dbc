"""What we know about a model before loading it: architecture, lengths, heads, weight size.

Read from a local directory, from the Hugging Face cache, or from the hub's metadata (config.json and
file sizes only, never the weights). The weight size comes, best first, from the files themselves,
from `model.safetensors.index.json`'s `metadata.total_size` (present even when no shard is downloaded),
from the hub's file listing, or as a last resort from an estimate of the parameter count in config.json.
When nothing answers we say so (`note`) and the plan stays conservative.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from reranker_template.facts.sentence_transformers import (
    RECIPE_FILES,
    StReranker,
    logit_score_dir,
    read_st_reranker,
)
from reranker_template.settings import is_true

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
SAFETENSORS_INDEX = "model.safetensors.index.json"

# model_type values of encoder-only models: they keep no KV cache between steps.
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "deberta",
        "deberta-v2",
        "electra",
        "distilbert",
        "modernbert",
        "new",
        "nomic_bert",
        "camembert",
        "mpnet",
        "llama_bidirec",  # nvidia llama-nemotron-rerank / -embed: Llama layers with bidirectional attention
    }
)
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "int8": 1, "uint8": 1}


class ModelSource(StrEnum):
    """Where the model's facts were read from (best first)."""

    LOCAL = "local"  # MODEL_NAME is a directory
    CACHE = "cache"  # the Hugging Face cache
    HUB = "hub"  # the hub's metadata (config.json and file sizes, never the weights)
    UNKNOWN = "unknown"  # nothing answered: `note` says why


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the model. Every field may be unknown (None/empty): the plan must cope."""

    name: str
    source: ModelSource
    config: Mapping[str, Any] = field(default_factory=dict)
    tokenizer_config: Mapping[str, Any] = field(default_factory=dict)
    weight_bytes: int | None = None  # size of the checkpoint's weights as stored
    local_dir: str | None = None
    note: str = ""  # why the facts are missing, when they are
    weight_source: str = ""  # "files", "safetensors index", "hub file sizes", "estimated from config.json"
    st_reranker: StReranker | None = None  # a Sentence-Transformers v6 causal-LM CrossEncoder's own recipe

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(self.config.get("architectures") or ())

    @property
    def model_type(self) -> str | None:
        return self._text_config().get("model_type") or self.config.get("model_type")

    def _text_config(self) -> Mapping[str, Any]:
        text = self.config.get("text_config")
        return text if isinstance(text, Mapping) else self.config

    def _text_int(self, key: str) -> int | None:
        return _int_or_none(self._text_config().get(key)) or _int_or_none(self.config.get(key))

    @property
    def max_position_embeddings(self) -> int | None:
        return self._text_int("max_position_embeddings")

    @property
    def tokenizer_max_length(self) -> int | None:
        value = self.tokenizer_config.get("model_max_length")
        # Tokenizers without a limit store a huge sentinel (1e30).
        if isinstance(value, (int, float)) and 0 < value < 10**7:
            return int(value)
        return None

    @property
    def sentence_transformers_max_seq_length(self) -> int | None:
        """max_seq_length from sentence_bert_config.json beside the weights: vLLM caps the model's length at it,
        and refuses a larger --max-model-len (all-MiniLM-L6-v2: 256, although its config says 512)."""
        if not self.local_dir:
            return None
        return _int_or_none(_read_json(Path(self.local_dir) / "sentence_bert_config.json").get("max_seq_length"))

    @property
    def num_attention_heads(self) -> int | None:
        return self._text_int("num_attention_heads")

    @property
    def num_key_value_heads(self) -> int | None:
        return self._text_int("num_key_value_heads") or self.num_attention_heads

    @property
    def vision_attention_heads(self) -> int | None:
        """Heads of a vision tower (jina-reranker-m0): tensor parallelism must divide them too."""
        vision = self.config.get("vision_config")
        if isinstance(vision, Mapping):
            return _int_or_none(vision.get("num_heads")) or _int_or_none(vision.get("num_attention_heads"))
        return None

    @property
    def hidden_size(self) -> int | None:
        return self._text_int("hidden_size")

    @property
    def num_hidden_layers(self) -> int | None:
        return self._text_int("num_hidden_layers")

    @property
    def head_dim(self) -> int | None:
        explicit = self._text_int("head_dim")
        if explicit:
            return explicit
        hidden, heads = self.hidden_size, self.num_attention_heads
        return hidden // heads if hidden and heads else None

    @property
    def is_encoder_only(self) -> bool:
        """Encoder-only attention: a known encoder model type, or a *Bidirectional* architecture (vLLM runs
        LlamaBidirectional* with encoder-only attention whatever the model type says)."""
        bidirectional = any("Bidirectional" in arch for arch in self.architectures)
        return (self.model_type or "") in ENCODER_MODEL_TYPES or bidirectional

    @property
    def checkpoint_dtype(self) -> str | None:
        for cfg in (self._text_config(), self.config):
            value = cfg.get("torch_dtype") or cfg.get("dtype")
            if isinstance(value, str):
                return value.replace("torch.", "")
        return None

    @property
    def quantized(self) -> bool:
        return bool(self._text_config().get("quantization_config") or self.config.get("quantization_config"))

    @property
    def loaded_weight_bytes(self) -> int | None:
        """The weights' size once vLLM has loaded them: it serves float32 checkpoints in 16 bits."""
        if self.weight_bytes is None:
            return None
        if not self.quantized and _DTYPE_BYTES.get(self.checkpoint_dtype or "") == 4:
            return self.weight_bytes // 2
        return self.weight_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache per token in 16 bits (0 for encoder-only models, which keep none)."""
        if self.is_encoder_only:
            return 0
        layers, kv_heads, head_dim = self.num_hidden_layers, self.num_key_value_heads, self.head_dim
        if not (layers and kv_heads and head_dim):
            return 0
        return 2 * layers * kv_heads * head_dim * 2

    @property
    def known(self) -> bool:
        return bool(self.config)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def estimate_parameters(config: Mapping[str, Any]) -> int | None:
    """A transformer's parameter count from its shapes (embeddings, attention, MLP); None if shapes are missing.

    Used only when no file size is known (config.json cached without weights): vision towers and biases
    are left out, so this is a slight underestimate.
    """
    info = ModelInfo(name="", source=ModelSource.UNKNOWN, config=config)
    text = info._text_config()
    vocab, hidden, layers = info._text_int("vocab_size"), info.hidden_size, info.num_hidden_layers
    heads, kv_heads, head_dim = info.num_attention_heads, info.num_key_value_heads, info.head_dim
    intermediate = info._text_int("intermediate_size") or (4 * hidden if hidden else None)
    if not (vocab and hidden and layers and heads and kv_heads and head_dim and intermediate):
        return None
    embeddings = vocab * hidden
    if text.get("tie_word_embeddings", config.get("tie_word_embeddings", True)) is False:
        embeddings *= 2
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    gated = (
        str(text.get("hidden_act", "")).lower() in ("silu", "swiglu", "swish", "gelu_pytorch_tanh")
        and not info.is_encoder_only
    )
    mlp = (3 if gated else 2) * hidden * intermediate
    return embeddings + layers * (attention + mlp)


def weight_size_of_dir(directory: Path) -> tuple[int | None, str]:
    """(bytes of weights, how we know). The safetensors index counts even when shards are missing."""
    index = _read_json(directory / SAFETENSORS_INDEX)
    total = _int_or_none((index.get("metadata") or {}).get("total_size")) if index else None
    if total:
        return total, "safetensors index"
    files = [p for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    # A directory with both .bin and .safetensors copies of the weights: count the safetensors only.
    safetensors = sum(p.stat().st_size for p in files if p.suffix == ".safetensors")
    if safetensors:
        return safetensors, "files"
    other = sum(p.stat().st_size for p in files)
    return (other, "files") if other else (None, "")


def _with_estimate(info: ModelInfo) -> ModelInfo:
    if info.weight_bytes is not None or not info.config:
        return info
    params = estimate_parameters(info.config)
    if params is None:
        return info
    per_param = _DTYPE_BYTES.get(info.checkpoint_dtype or "", 2)
    return replace(info, weight_bytes=params * per_param, weight_source="estimated from config.json")


def _from_dir(model: str, source: ModelSource, directory: Path) -> ModelInfo:
    weights, how = weight_size_of_dir(directory)
    return ModelInfo(
        name=model,
        source=source,
        config=_read_json(directory / "config.json"),
        tokenizer_config=_read_json(directory / "tokenizer_config.json"),
        weight_bytes=weights,
        local_dir=str(directory),
        weight_source=how,
        st_reranker=read_st_reranker(directory),
    )


def inspect_local(model: str) -> ModelInfo:
    directory = Path(model).expanduser()
    info = _from_dir(model, ModelSource.LOCAL, directory)
    if not info.config:
        info = replace(info, note=f"{model} has no readable config.json: model shape unknown")
    return _with_estimate(info)


def hub_cache_dir(env: Mapping[str, str]) -> Path:
    """Where huggingface_hub keeps downloads, resolved from this environment (not the one at import time)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def inspect_cache(model: str, env: Mapping[str, str] | None = None) -> ModelInfo | None:
    """The model's files if a previous download left them in the HF cache (config.json at least)."""
    from huggingface_hub import try_to_load_from_cache

    env = os.environ if env is None else env
    config_path = try_to_load_from_cache(model, "config.json", cache_dir=str(hub_cache_dir(env)))
    if not isinstance(config_path, str):
        return None
    return _from_dir(model, ModelSource.CACHE, Path(config_path).parent)


def _hub_st_reranker(sizes: Mapping[str, int], fetch: Callable[[str], Path]) -> StReranker | None:
    """A Sentence-Transformers v6 reranker's recipe files (small, and tokenizer.json), fetched into the cache."""
    if "config_sentence_transformers.json" not in sizes or "modules.json" not in sizes:
        return None
    fetched = [fetch(name) for name in RECIPE_FILES if name in sizes]  # modules.json first: in sizes, checked
    snapshot = fetched[0].parent
    sub = logit_score_dir(snapshot)
    if sub is None or f"{sub}/config.json" not in sizes:
        return None
    fetch(f"{sub}/config.json")
    return read_st_reranker(snapshot)


def inspect_hub(
    model: str, token: str | None = None, timeout: float = 10.0, env: Mapping[str, str] | None = None
) -> ModelInfo:
    """config.json and file sizes from the hub, without downloading weights.

    The endpoint (HF_ENDPOINT) and the cache are taken from `env`, not from the environment
    huggingface_hub saw when it was imported.
    """
    env = os.environ if env is None else env
    endpoint = env.get("HF_ENDPOINT") or None
    cache_dir = str(hub_cache_dir(env))
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError  # its home since huggingface_hub 0.24
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return ModelInfo(name=model, source=ModelSource.UNKNOWN, note="huggingface_hub is not installed")

    def fetch(filename: str) -> Path:
        return Path(
            hf_hub_download(model, filename, token=token, etag_timeout=timeout, endpoint=endpoint, cache_dir=cache_dir)
        )

    def download(filename: str) -> dict[str, Any]:
        return _read_json(fetch(filename))

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(model, files_metadata=True, timeout=timeout)
        sizes = {s.rfilename: (s.size or 0) for s in (info.siblings or [])}
        safetensors = sum(v for k, v in sizes.items() if k.endswith(".safetensors"))
        weights = safetensors or sum(v for k, v in sizes.items() if k.endswith(WEIGHT_SUFFIXES)) or None
        config = download("config.json")
        tokenizer_config = download("tokenizer_config.json") if "tokenizer_config.json" in sizes else {}
        return ModelInfo(
            name=model,
            source=ModelSource.HUB,
            config=config,
            tokenizer_config=tokenizer_config,
            weight_bytes=weights,
            weight_source="hub file sizes" if weights else "",
            st_reranker=_hub_st_reranker(sizes, fetch),
        )
    except HfHubHTTPError as exc:
        return ModelInfo(
            name=model, source=ModelSource.UNKNOWN, note=f"the hub did not answer for {model}: {exc}".splitlines()[0]
        )
    except Exception as exc:  # offline, DNS failure, timeout: all mean "unknown", never a crash
        return ModelInfo(
            name=model,
            source=ModelSource.UNKNOWN,
            note=f"could not read {model}'s metadata from the hub ({type(exc).__name__}); offline?",
        )


def inspect_model(
    model: str, *, is_local: bool, token: str | None = None, env: Mapping[str, str] | None = None
) -> ModelInfo:
    """Local directory, else the HF cache, else the hub (unless HF_HUB_OFFLINE); never downloads weights."""
    env = os.environ if env is None else env
    if is_local:
        return inspect_local(model)
    cached = inspect_cache(model, env)
    if cached is not None and cached.weight_bytes is not None:
        return cached
    if is_true(env.get("HF_HUB_OFFLINE")):
        if cached is not None:
            return _with_estimate(
                replace(
                    cached,
                    note=f"{model}: only config.json is in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                    "weight size estimated from its shapes",
                )
            )
        return ModelInfo(
            name=model,
            source=ModelSource.UNKNOWN,
            note=f"{model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
            "size and shape unknown, planning conservatively",
        )
    hub = inspect_hub(model, token=token, env=env)
    if hub.known:
        return _with_estimate(hub)
    if cached is not None:
        return _with_estimate(replace(cached, note=hub.note + "; using the cached config.json"))
    return replace(hub, note=hub.note + ": size and shape unknown, planning conservatively")
