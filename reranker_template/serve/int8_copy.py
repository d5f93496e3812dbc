"""CPU_QUANTIZATION=int8: write the int8 copy the plan serves (plan/quantization.py decides when and where).

The copy is the source directory with two files changed, in the compressed-tensors format vLLM reads:
- model.safetensors: each linear layer of the encoder's blocks (`encoder.layer.N.` attention query, key,
  value and output dense, intermediate dense, output dense) becomes an int8 `weight` and a float32
  `weight_scale` of one value per output channel: scale = max|w| / 127 over the row, q = round(w / scale)
  (symmetric; the row's largest weight is exact, the others are off by at most scale / 2). Every other
  tensor (embeddings, LayerNorms, biases, pooler, classifier) is copied unchanged.
- config.json: a `quantization_config` saying so (int-quantized, channel-wise weights, token-wise dynamic
  int8 activations, targets Linear) and ignoring the linear layers outside the encoder blocks (pooler,
  classifier), which stay float.
Every other file (tokenizer, sentence-transformers configs) is copied as it is; other weight formats
(ONNX, OpenVINO, a second copy in pytorch_model.bin) are left out.

Written once per source: `ensure_int8_copy` reuses a copy whose marker (written last) names this FORMAT and
the source weights' checksums, and otherwise rebuilds it in a temporary directory renamed into place under
a lock, as the bundled model is built (serve/bundled_model.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reranker_template.errors import ModelUnavailable
from reranker_template.fileio import exclusive_lock, file_sha256, read_json_object, replace_directory, write_json
from reranker_template.plan.contract import QuantizedCopy
from reranker_template.serve.download import fetch_hub_model
from reranker_template.settings import is_local_path, is_true

if TYPE_CHECKING:
    import torch

log = logging.getLogger("reranker.int8")

FORMAT = 1  # bump when the copy changes: a copy of another format is rewritten
MARKER = "int8-copy.json"
# The linear layers of an encoder block, as BERT, RoBERTa and XLM-RoBERTa checkpoints name them.
ENCODER_LINEAR = re.compile(
    r"(^|\.)encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight$"
)
LINEARS_PER_BLOCK = 6
ENCODER_BLOCK = re.compile(r"encoder\.layer\.\d+\.")  # the block a linear layer belongs to
# Weight files a copy does not carry: the safetensors are rewritten, the rest are other formats of the same weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".onnx_data", ".h5", ".msgpack", ".ot", ".xml")


@dataclass(frozen=True)
class Int8Copy:
    """A written (or reused) copy: `seconds` is None when it was reused."""

    directory: Path
    quantized_layers: int
    seconds: float | None

    def log_line(self) -> str:
        if self.seconds is None:
            return f"int8 copy: reusing {self.directory} ({self.quantized_layers} int8 linear layers)"
        return (
            f"int8 copy: wrote {self.directory} in {self.seconds:.1f} s "
            f"({self.quantized_layers} linear layers as int8, CPU_QUANTIZATION=int8)"
        )


def ensure_int8_copy(source: Path, copy: QuantizedCopy) -> Int8Copy:
    """The plan's int8 copy of the model in `source`, written on first use and reused after.

    ModelUnavailable (one sentence with the fix) when the source has no weights we can read, its weights
    lack the encoder layers the copy quantizes, or the copy cannot be written.
    """
    target = Path(copy.directory)
    weight_files = _weight_files(source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(target.parent / f".{target.name}.lock"):
            checksums = {path.name: file_sha256(path) for path in weight_files}
            marker = read_json_object(target / MARKER)
            if marker is not None and marker.get("format") == FORMAT and marker.get("source_sha256") == checksums:
                return Int8Copy(target, int(marker.get("quantized_layers") or 0), None)
            started = time.monotonic()
            log.info("int8 copy: writing %s from %s (CPU_QUANTIZATION=int8)", target, source)
            layers = 0

            def build(work: Path) -> None:
                nonlocal layers
                layers = write_int8_copy(source, weight_files, work)
                write_json(
                    work / MARKER,
                    {
                        "format": FORMAT,
                        "source": copy.source,
                        "revision": copy.revision,
                        "source_sha256": checksums,
                        "quantized_layers": layers,
                    },
                    mode=0o644,
                )

            replace_directory(target, build)
            return Int8Copy(target, layers, time.monotonic() - started)
    except OSError as exc:
        raise ModelUnavailable(
            f"the int8 copy of {copy.source} cannot be written into {target.parent} ({exc.strerror or exc}): free "
            "some space there, or unset CPU_QUANTIZATION to serve the model as it is."
        ) from None


def ensure_planned_copy(copy: QuantizedCopy, token: str | None) -> Int8Copy:
    """`ensure_int8_copy` for a caller that has only the plan (offline scoring): a hub source is fetched
    (or found in the cache) first, as the launcher does before it writes the copy."""
    if is_local_path(copy.source):
        return ensure_int8_copy(Path(copy.source).expanduser(), copy)
    files = fetch_hub_model(
        copy.source, token, revision=copy.revision, offline=is_true(os.environ.get("HF_HUB_OFFLINE"))
    )
    return ensure_int8_copy(Path(files.path), copy)


def _weight_files(source: Path) -> list[Path]:
    """The checkpoint's safetensors files (one, or the shards its index names)."""
    index = read_json_object(source / "model.safetensors.index.json")
    if index is not None and isinstance(index.get("weight_map"), dict):
        return [source / name for name in sorted(set(index["weight_map"].values()))]
    single = source / "model.safetensors"
    if single.is_file():
        return [single]
    raise ModelUnavailable(
        f"CPU_QUANTIZATION=int8 reads the weights from model.safetensors, and {source} has none (only "
        f"{', '.join(sorted(p.name for p in source.iterdir() if p.suffix in WEIGHT_SUFFIXES)) or 'no weights'}): "
        "unset CPU_QUANTIZATION, or convert the checkpoint to safetensors."
    )


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel: (int8 weight, float32 scale of shape [out, 1])."""
    import torch

    rows = weight.float()
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
    return (rows / scale).round().clamp(-127, 127).to(torch.int8), scale


def write_int8_copy(source: Path, weight_files: list[Path], out: Path) -> int:
    """Write the copy of `source` into the empty directory `out`; returns how many linear layers are int8."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    tensors: dict[str, torch.Tensor] = {}
    for path in weight_files:
        try:
            tensors.update(load_file(str(path)))
        except SafetensorError as exc:
            raise ModelUnavailable(
                f"{path} is not a readable safetensors file ({exc}): delete it so that it is downloaded again, "
                "or unset CPU_QUANTIZATION."
            ) from None
    quantized: dict[str, torch.Tensor] = {}
    linear_modules = [name[: -len(".weight")] for name in tensors if ENCODER_LINEAR.search(name)]
    _check_blocks(source, linear_modules)
    for name, tensor in tensors.items():
        if ENCODER_LINEAR.search(name):
            weight, scale = quantize_rows(tensor)
            quantized[name] = weight
            quantized[name[: -len("weight")] + "weight_scale"] = scale
        else:
            quantized[name] = tensor.contiguous().clone()  # shared (tied) tensors cannot be saved as they are
    save_file(quantized, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = read_json_object(source / "config.json")
    if config is None:
        raise ModelUnavailable(f"{source / 'config.json'} is missing or not JSON: the model directory is broken.")
    config["quantization_config"] = _quantization_config(_float_linears(tensors, set(linear_modules)))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _copy_other_files(source, out)
    return len(linear_modules)


def _check_blocks(source: Path, linear_modules: list[str]) -> None:
    blocks = {ENCODER_BLOCK.findall(module)[0] for module in linear_modules}  # each names its block once
    if not linear_modules or len(linear_modules) != LINEARS_PER_BLOCK * len(blocks):
        raise ModelUnavailable(
            f"the weights in {source} do not have the encoder layers CPU_QUANTIZATION=int8 quantizes "
            f"(encoder.layer.N. query, key, value and dense layers; found {len(linear_modules)} in {len(blocks)} "
            "blocks): unset CPU_QUANTIZATION to serve this model as it is."
        )


def _float_linears(tensors: dict[str, torch.Tensor], quantized: set[str]) -> list[str]:
    """The linear layers that stay float: two-dimensional weights outside the encoder blocks and the
    embeddings (the pooler's dense layer, the classifier's)."""
    return sorted(
        name[: -len(".weight")]
        for name, tensor in tensors.items()
        if name.endswith(".weight")
        and tensor.dim() == 2
        and name[: -len(".weight")] not in quantized
        and "embeddings" not in name
    )


def _quantization_config(ignore: list[str]) -> dict[str, Any]:
    """compressed-tensors' description of the copy (vLLM's CompressedTensorsW8A8Int8 scheme)."""
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False},
                "input_activations": {
                    "num_bits": 8,
                    "type": "int",
                    "symmetric": True,
                    "strategy": "token",
                    "dynamic": True,
                },
                "output_activations": None,
            }
        },
        "ignore": ignore,
    }


def _copy_other_files(source: Path, out: Path) -> None:
    """Everything but the weights and config.json, keeping subdirectories (sentence-transformers' modules)."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if relative.parts[0].startswith(".") or path.is_dir():
            continue
        if path.suffix in WEIGHT_SUFFIXES or str(relative) in ("config.json", "model.safetensors.index.json", MARKER):
            continue
        if relative.parts[0] in ("onnx", "openvino"):
            continue
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / relative)
