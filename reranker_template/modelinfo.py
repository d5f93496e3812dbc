"""What we know about a model before loading it: architecture, lengths, heads, weight size.

Read from a local directory, from the Hugging Face cache, or from the hub's metadata (config.json and
file sizes only, never the weights). When none answers we say so and the plan stays conservative.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CONFIG_FILES = ("config.json", "tokenizer_config.json", "sentence_bert_config.json")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the model. Every field may be unknown (None/empty): the plan must cope."""

    name: str
    source: str  # "local", "cache", "hub", or "unknown"
    config: Mapping[str, Any] = field(default_factory=dict)
    tokenizer_config: Mapping[str, Any] = field(default_factory=dict)
    weight_bytes: int | None = None
    local_dir: str | None = None
    note: str = ""  # why the facts are missing, when they are

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(self.config.get("architectures") or ())

    @property
    def model_type(self) -> str | None:
        return self._text_config().get("model_type") or self.config.get("model_type")

    def _text_config(self) -> Mapping[str, Any]:
        text = self.config.get("text_config")
        return text if isinstance(text, Mapping) else self.config

    @property
    def max_position_embeddings(self) -> int | None:
        value = self._text_config().get("max_position_embeddings") or self.config.get("max_position_embeddings")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def tokenizer_max_length(self) -> int | None:
        value = self.tokenizer_config.get("model_max_length")
        # Tokenizers without a limit store a huge sentinel (1e30).
        if isinstance(value, (int, float)) and 0 < value < 10**7:
            return int(value)
        return None

    @property
    def num_attention_heads(self) -> int | None:
        return _int_or_none(self._text_config().get("num_attention_heads"))

    @property
    def num_key_value_heads(self) -> int | None:
        return _int_or_none(self._text_config().get("num_key_value_heads")) or self.num_attention_heads

    @property
    def known(self) -> bool:
        return bool(self.config)


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def weight_size_of_dir(directory: Path) -> int | None:
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    # A directory with both .bin and .safetensors copies of the weights: count the safetensors only.
    safetensors = sum(p.stat().st_size for p in directory.rglob("*.safetensors") if p.is_file())
    if safetensors:
        return safetensors
    return total or None


def inspect_local(model: str) -> ModelInfo:
    directory = Path(model).expanduser()
    return ModelInfo(
        name=model,
        source="local",
        config=_read_json(directory / "config.json"),
        tokenizer_config=_read_json(directory / "tokenizer_config.json"),
        weight_bytes=weight_size_of_dir(directory),
        local_dir=str(directory),
    )


def inspect_cache(model: str) -> ModelInfo | None:
    """The model's files if a previous download left them in the HF cache."""
    try:
        from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    config_path = try_to_load_from_cache(model, "config.json")
    if not isinstance(config_path, str):
        return None
    snapshot = Path(config_path).parent
    return ModelInfo(
        name=model,
        source="cache",
        config=_read_json(snapshot / "config.json"),
        tokenizer_config=_read_json(snapshot / "tokenizer_config.json"),
        weight_bytes=weight_size_of_dir(snapshot),
        local_dir=str(snapshot),
    )


def inspect_hub(model: str, token: str | None = None, timeout: float = 10.0) -> ModelInfo:
    """config.json and file sizes from the hub, without downloading weights."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.utils import HfHubHTTPError

        api = HfApi(token=token)
        info = api.model_info(model, files_metadata=True, timeout=timeout)
        sizes = {s.rfilename: (s.size or 0) for s in (info.siblings or [])}
        safetensors = sum(v for k, v in sizes.items() if k.endswith(".safetensors"))
        weights = safetensors or sum(v for k, v in sizes.items() if k.endswith(WEIGHT_SUFFIXES)) or None
        config = _read_json(Path(hf_hub_download(model, "config.json", token=token, etag_timeout=timeout)))
        tokenizer_config: dict[str, Any] = {}
        if "tokenizer_config.json" in sizes:
            tokenizer_config = _read_json(Path(hf_hub_download(model, "tokenizer_config.json", token=token, etag_timeout=timeout)))
        return ModelInfo(name=model, source="hub", config=config, tokenizer_config=tokenizer_config, weight_bytes=weights)
    except HfHubHTTPError as exc:
        return ModelInfo(name=model, source="unknown", note=f"the hub did not answer for {model}: {exc}".splitlines()[0])
    except Exception as exc:  # offline, DNS failure, timeout: all mean "unknown", never a crash
        return ModelInfo(name=model, source="unknown", note=f"could not read {model}'s metadata ({type(exc).__name__}); offline?")


def inspect_model(model: str, *, is_local: bool, token: str | None = None, env: Mapping[str, str] | None = None) -> ModelInfo:
    env = os.environ if env is None else env
    if is_local:
        return inspect_local(model)
    cached = inspect_cache(model)
    if cached is not None:
        return cached
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return ModelInfo(name=model, source="unknown", note=f"{model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    return inspect_hub(model, token=token)
