"""A model baked into the image at build time: `docker build --build-arg MODEL_NAME=org/name .`

Why: a serverless worker or a host on a slow link pays the download on every cold start; a baked image
pays it once, at build time. Rules:
- The build (`reranker bake`) downloads the files a start would fetch (serve/download.py's patterns: no
  ONNX, no .bin copy beside safetensors) into BAKED_MODELS_DIR/<org>--<name>, outside /workspace (Vast
  mounts a volume there, which would hide it), and writes a manifest last: a directory without one is
  an interrupted build and is never served.
- At start (`stack.prepare`), a MODEL_NAME that names the baked model is served from that directory, so
  nothing is downloaded and the hub is not asked; clients still send the hub id (SERVED_MODEL_NAME).
  A `--revision` in VLLM_ARGS other than the baked one is fetched from the hub as usual.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from reranker_template.errors import ModelUnavailable
from reranker_template.fileio import read_json_object, write_json
from reranker_template.settings import is_local_path

log = logging.getLogger("reranker.baked")

MANIFEST = "baked.json"


@dataclass(frozen=True)
class BakedModel:
    model: str  # the hub id it was baked from
    revision: str | None  # what the build asked for (None: the default branch)
    commit: str  # what the hub gave
    path: Path

    def serves(self, model: str, revision: str | None) -> bool:
        """True when a start asking for `model` at `revision` (None: any) can use this copy."""
        return model == self.model and revision in (None, self.revision, self.commit)

    def reason(self) -> str:
        return f"model: {self.model} baked into the image at commit {self.commit[:12]} ({self.path}): no download"


def directory_for(model: str, root: Path) -> Path:
    return root / model.replace("/", "--")


def bake(model: str, revision: str | None, token: str | None, root: Path) -> BakedModel:
    """Download `model` into `root` and record it. ModelUnavailable with one sentence when it cannot."""
    from reranker_template.serve.download import download_into

    if is_local_path(model):
        raise ModelUnavailable(f"MODEL_NAME={model} is a path: bake a Hugging Face id like BAAI/bge-reranker-v2-m3")
    target = directory_for(model, root)
    shutil.rmtree(target, ignore_errors=True)
    commit = download_into(model, token, revision, target)
    shutil.rmtree(target / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
    baked = BakedModel(model=model, revision=revision, commit=commit, path=target)
    write_json(target / MANIFEST, {"model": model, "revision": revision, "commit": commit})
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    log.info("baked %s (commit %s, %.0f MB) into %s", model, commit[:12], size / 1e6, target)
    return baked


def find_baked(model: str, revision: str | None, root: Path | None) -> BakedModel | None:
    """The baked copy of `model` that serves `revision`, if the image has one."""
    if root is None or is_local_path(model):
        return None
    target = directory_for(model, root)
    manifest = read_json_object(target / MANIFEST)
    if manifest is None or not isinstance(manifest.get("commit"), str):
        return None
    baked_revision = manifest.get("revision")
    baked = BakedModel(
        model=str(manifest.get("model")),
        revision=baked_revision if isinstance(baked_revision, str) else None,
        commit=manifest["commit"],
        path=target,
    )
    return baked if baked.serves(model, revision) else None
