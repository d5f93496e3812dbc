"""Make sure the model's files are on disk before vLLM starts, with progress in the log.

Downloading in vLLM itself would hide progress and, with no network, hang for minutes; here a model
that cannot be had fails within a minute with a message that says what to do.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reranker_template.errors import ModelUnavailable
from reranker_template.serve.failures import gated_sentence, missing_sentence

log = logging.getLogger("reranker.download")

# Formats vLLM never loads: skipping them saves gigabytes on repositories that ship several.
IGNORE_PATTERNS = [
    "*.onnx",
    "onnx/*",
    "*.gguf",
    "openvino/*",
    "*.h5",
    "*.msgpack",
    "flax_model*",
    "tf_model*",
    "rust_model*",
    "*.ot",
]
# PyTorch-pickle weights that repositories often ship beside safetensors ones. vLLM's default load format
# ("auto") reads safetensors when a repository has them and never opens these, so downloading them only
# doubles the transfer (bge-reranker-base: 1.1 GB of each). Root-level names only: a module folder of a
# sentence-transformers model (2_Dense/pytorch_model.bin) may be the only copy of its weights.
DUPLICATE_WEIGHTS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
ADVICE = (
    "Either serve a local directory (MODEL_NAME=/path/to/model) or pre-download the model into "
    "HF_HOME (for example with a PROVISIONING_SCRIPT, see provisioning/), then start again."
)


@dataclass(frozen=True)
class ModelFiles:
    path: str  # the local directory that holds the model
    offline: bool  # True: every file is local, so vLLM can run with HF_HUB_OFFLINE=1


def check_local_model(model: str) -> ModelFiles:
    directory = Path(model).expanduser()
    if not directory.is_dir():
        raise ModelUnavailable(
            f"MODEL_NAME={model}: no such directory. Give the path of a model directory (with config.json) "
            "or a Hugging Face id like BAAI/bge-reranker-v2-m3."
        )
    if not (directory / "config.json").is_file():
        raise ModelUnavailable(
            f"MODEL_NAME={model}: the directory has no config.json, so it is not a Hugging Face model directory."
        )
    return ModelFiles(path=str(directory), offline=True)


def ignore_patterns(files: Iterable[str]) -> list[str]:
    """What not to download from a repository holding `files`: the formats vLLM never loads, and the
    .bin copy of the weights when safetensors ones are at the root (see DUPLICATE_WEIGHTS)."""
    has_safetensors = any("/" not in name and name.endswith(".safetensors") for name in files)
    return IGNORE_PATTERNS + (DUPLICATE_WEIGHTS if has_safetensors else [])


def _cached_snapshot(model: str, token: str | None, revision: str | None = None) -> str | None:
    """The cached copy's directory, if the cache holds the model: every file we would download (a .bin copy
    of safetensors weights may be missing, see DUPLICATE_WEIGHTS) and root-level weights of some format."""
    from huggingface_hub import snapshot_download

    skipped = IGNORE_PATTERNS + DUPLICATE_WEIGHTS  # offline, the repository's listing is unknown
    try:
        path = Path(
            snapshot_download(model, token=token, revision=revision, local_files_only=True, ignore_patterns=skipped)
        )
    except Exception:  # not cached (LocalEntryNotFoundError) or an incomplete cache entry
        return None
    weights = [f for pattern in ("*.safetensors", "*.bin", "*.pt") for f in path.glob(pattern)]
    return str(path) if weights else None


def fetch_hub_model(
    model: str,
    token: str | None,
    *,
    revision: str | None = None,
    deadline_seconds: float = 60.0,
    offline: bool = False,
) -> ModelFiles:
    """Download (or find in the cache) a hub model at `revision` (None: the default branch). Logs progress;
    fails within `deadline_seconds` with no network, and with one sentence when the disk fills up."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cached = _cached_snapshot(model, token, revision)
    if offline:
        if cached:
            log.info("%s: using the cached copy in %s (HF_HUB_OFFLINE is set)", model, cached)
            return ModelFiles(path=cached, offline=True)
        raise ModelUnavailable(f"{model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. {ADVICE}")

    log.info("checking %s on the Hugging Face hub", model)
    started = time.monotonic()
    last_error: Exception | None = None
    while time.monotonic() - started < deadline_seconds:
        remaining = max(5.0, deadline_seconds - (time.monotonic() - started))
        try:
            info = HfApi(token=token).model_info(model, revision=revision, timeout=min(20.0, remaining))
            break
        except (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError) as exc:
            raise _refused(model, revision, exc) from None
        except Exception as exc:  # network errors of every kind: retry until the deadline
            last_error = exc
            log.info("hub not reachable yet (%s); retrying", type(exc).__name__)
            time.sleep(min(5.0, max(0.0, deadline_seconds - (time.monotonic() - started))))
    else:
        if cached:
            log.info("hub unreachable (%s); using the cached copy in %s", type(last_error).__name__, cached)
            return ModelFiles(path=cached, offline=True)
        raise ModelUnavailable(
            f"cannot reach the Hugging Face hub to download {model} "
            f"({type(last_error).__name__}: {last_error}). {ADVICE}"
        )
    skipped = ignore_patterns(sibling.rfilename for sibling in info.siblings or [])
    return ModelFiles(path=_download(model, token, revision, skipped), offline=True)


def _refused(model: str, revision: str | None, exc: Exception) -> ModelUnavailable:
    """The hub's refusal as one sentence (the same ones preflight gives, for when it could not ask)."""
    from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return ModelUnavailable(gated_sentence(model))
    if isinstance(exc, RevisionNotFoundError):
        return ModelUnavailable(
            f"{model} has no revision {revision!r} on the hub: give --revision a branch, tag or commit of it"
        )
    return ModelUnavailable(missing_sentence(model))


def download_into(model: str, token: str | None, revision: str | None, directory: Path) -> str:
    """Download `model` at `revision` into `directory` (a plain folder, not the cache): the files a start
    would fetch, nothing else. Returns the commit it got. One attempt: this runs in an image build."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi(token=token).model_info(model, revision=revision, timeout=30)
    except (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError) as exc:
        raise _refused(model, revision, exc) from None
    except Exception as exc:  # network errors of every kind
        raise ModelUnavailable(
            f"cannot reach the Hugging Face hub to download {model} ({type(exc).__name__}: {exc})"
        ) from None
    skipped = ignore_patterns(sibling.rfilename for sibling in info.siblings or [])
    _download(model, token, info.sha, skipped, local_dir=directory)
    return info.sha or revision or "main"


def _download(
    model: str, token: str | None, revision: str | None, skipped: list[str], local_dir: Path | None = None
) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    log.info("downloading %s (files already in the cache are skipped)", model)
    try:
        path = snapshot_download(model, token=token, revision=revision, ignore_patterns=skipped, local_dir=local_dir)
    except (GatedRepoError, RevisionNotFoundError, RepositoryNotFoundError) as exc:
        raise _refused(model, revision, exc) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise ModelUnavailable(
            f"the disk filled up while downloading {model} (No space left on device): free space where the "
            "Hugging Face cache lives (HF_HOME), point HF_HOME at a bigger volume, or on Vast rent a bigger disk "
            "(reranker vast launch --disk GB)"
        ) from None
    log.info("%s is ready in %s", model, path)
    return str(path)
