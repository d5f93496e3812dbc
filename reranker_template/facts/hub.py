"""What the Hugging Face hub says about a model repository, asked before anything is downloaded (observed).

Does the repository exist, can this token read it (private, gated), does the revision exist, and which
files (with their sizes) does it hold at that revision. The hub answers the same way for a repository that
does not exist and for a private one the token cannot see (404/401 "RepoNotFound"); it lists a gated
repository's files to anyone but serves them only to accounts that accepted its licence, so access to a
gated repository is tested by asking for its config.json, the first file every download fetches.
Nothing here decides: plan/preflight.py judges what was observed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reranker_template.facts.model import hub_cache_dir

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubAnswer(StrEnum):
    FOUND = "found"  # readable with this token (or none); `files` lists it
    NOT_FOUND = "not-found"  # no such repository, or a private one this token cannot see
    GATED = "gated"  # exists and is gated; this token (or no token) has not been granted access
    NO_REVISION = "no-revision"  # the repository exists, the revision (branch, tag, commit) does not
    BAD_TOKEN = "bad-token"  # the hub refused the token itself
    UNREACHABLE = "unreachable"  # no answer (offline, DNS, timeout, a 5xx): nothing is known


@dataclass(frozen=True)
class HubRepo:
    model: str
    answer: HubAnswer
    revision: str | None = None  # as asked (None: the default branch)
    token_given: bool = False
    files: Mapping[str, int] = field(default_factory=dict)  # file name -> bytes, at that revision
    sha: str | None = None  # the commit the revision points at
    gated: bool = False  # gated on the hub (whether or not this token has access)
    endpoint: str = DEFAULT_ENDPOINT
    detail: str = ""  # for UNREACHABLE: what went wrong

    @property
    def url(self) -> str:
        """The repository's page, where a licence is accepted."""
        return f"{self.endpoint.rstrip('/')}/{self.model}"


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _answer_for(exc: Exception) -> HubAnswer:
    """The observation a hub error stands for (huggingface_hub's classes; a bare 401 means a refused token)."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return HubAnswer.GATED
    if isinstance(exc, RevisionNotFoundError):
        return HubAnswer.NO_REVISION
    if isinstance(exc, RepositoryNotFoundError):
        return HubAnswer.NOT_FOUND
    if _status(exc) == 401:
        return HubAnswer.BAD_TOKEN  # "Invalid credentials in Authorization header"
    return HubAnswer.UNREACHABLE


def observe_hub(
    model: str,
    *,
    revision: str | None,
    token: str | bool | None,
    env: Mapping[str, str] | None = None,
    timeout: float = 15.0,
) -> HubRepo:
    """Ask the hub (HF_ENDPOINT from `env`) about `model` at `revision` with `token` (None: huggingface_hub's
    own lookup, HF_TOKEN or a saved login; False: anonymous). Never raises: a failure is an answer."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url

    env = os.environ if env is None else env
    endpoint = env.get("HF_ENDPOINT") or None
    base = HubRepo(
        model=model,
        answer=HubAnswer.UNREACHABLE,
        revision=revision,
        token_given=bool(token),
        endpoint=endpoint or DEFAULT_ENDPOINT,
    )
    try:
        info: Any = HfApi(endpoint=endpoint, token=token).model_info(
            model, revision=revision, files_metadata=True, timeout=timeout
        )
    except Exception as exc:  # every failure is an observation, never a crash
        return _failed(base, exc)
    files = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    found = HubRepo(
        model=model,
        answer=HubAnswer.FOUND,
        revision=revision,
        token_given=bool(token),
        files=files,
        sha=info.sha,
        gated=bool(info.gated),
        endpoint=base.endpoint,
    )
    if not found.gated or "config.json" not in files:
        return found
    try:  # a gated repository: may this token download from it?
        url = hf_hub_url(model, "config.json", revision=revision, endpoint=endpoint)
        get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint)
    except Exception as exc:
        return _failed(found, exc)
    return found


def _failed(repo: HubRepo, exc: Exception) -> HubRepo:
    answer = _answer_for(exc)
    detail = "" if answer is not HubAnswer.UNREACHABLE else f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return HubRepo(
        model=repo.model,
        answer=answer,
        revision=repo.revision,
        token_given=repo.token_given,
        files=repo.files if answer is HubAnswer.GATED else {},
        sha=repo.sha,
        gated=repo.gated or answer is HubAnswer.GATED,
        endpoint=repo.endpoint,
        detail=detail,
    )


def cached_files(model: str, sha: str | None, env: Mapping[str, str]) -> frozenset[str]:
    """The files of `model` at commit `sha` already in the Hugging Face cache (they will not be downloaded)."""
    if not sha:
        return frozenset()
    snapshot = hub_cache_dir(env) / f"models--{model.replace('/', '--')}" / "snapshots" / sha
    if not snapshot.is_dir():
        return frozenset()
    return frozenset(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
