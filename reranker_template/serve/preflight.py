"""Preflight: look at what can be known cheaply about the model and judge it, before anything is downloaded.

Run by the launcher before the download (a failure goes FATAL at once, its sentence in /health), by
`reranker plan` (printed with the plan), and by `reranker vast launch` before renting. The observations are
facts/ (hub, disk, model metadata, transformers), the verdicts plan/preflight.py; this module only puts them
together for one model and one place it will run (`Target`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reranker_template.errors import ModelUnavailable
from reranker_template.facts.disk import free_bytes
from reranker_template.facts.hub import HubAnswer, HubRepo, cached_files, observe_hub
from reranker_template.facts.model import ModelInfo, hub_cache_dir, inspect_local, inspect_model
from reranker_template.facts.transformers_backend import transformers_backend_serves
from reranker_template.plan.preflight import (
    Advice,
    Finding,
    download_bytes,
    judge_architecture,
    judge_disk,
    judge_hub,
    judge_tokenizer,
    probe_candidate,
)
from reranker_template.plan.presets import choose_preset
from reranker_template.plan.user_args import UserArgs
from reranker_template.serve.download import ignore_patterns
from reranker_template.settings import Settings

Probe = Callable[[str], bool | None]


@dataclass(frozen=True)
class Report:
    """Every finding, in order. `advisory` names checks whose failure is only a warning (`reranker plan` runs
    where the model may never be downloaded, so its disk check warns)."""

    findings: tuple[Finding, ...] = ()

    def problem(self, advisory: Collection[str] = ()) -> Finding | None:
        return next((f for f in self.findings if not f.ok and f.check not in advisory), None)

    def raise_for_problem(self, advisory: Collection[str] = ()) -> None:
        """ModelUnavailable (exit 2) with the first failed check's sentence."""
        problem = self.problem(advisory)
        if problem is not None:
            raise ModelUnavailable(problem.message)

    def lines(self, advisory: Collection[str] = ()) -> list[str]:
        return [
            f"warning {f.check}: {f.message}" if not f.ok and f.check in advisory else f.line() for f in self.findings
        ]


@dataclass(frozen=True)
class Target:
    """Where the model will be downloaded, with which token, and how the user fixes things there."""

    advice: Advice = field(default_factory=Advice)
    token: str | bool | None = None  # None: huggingface_hub's own lookup (HF_TOKEN, a saved login); False: none
    free_bytes: int | None = None  # None: measure the Hugging Face cache's volume on this machine
    where: str | None = None  # how to name that place in a sentence (default: the cache directory)
    use_cache: bool = True  # files already in this machine's cache need no room


def _architecture(model: str, info: ModelInfo, argv: Sequence[str], files: Sequence[str], probe: Probe) -> Finding:
    candidate = probe_candidate(info.config, argv)
    return judge_architecture(
        model,
        info.config,
        argv,
        sentence_transformers="modules.json" in files,
        transformers_serves=probe(candidate) if candidate else None,
    )


def _dir_files(directory: str | None) -> list[str]:
    if not directory or not Path(directory).is_dir():
        return []
    root = Path(directory)
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]


def planned_argv(settings: Settings, info: ModelInfo) -> list[str]:
    """The model flags a plan would pass (the preset's, then VLLM_ARGS, which win) where no plan can be made."""
    flags = [part for flag in choose_preset(settings, info).flags for part in flag.argv()]
    return [*flags, *settings.vllm_args]


def preflight(
    settings: Settings,
    env: Mapping[str, str],
    target: Target,
    *,
    argv: Sequence[str] | None = None,
    offline: bool = False,
    probe: Probe = transformers_backend_serves,
) -> Report:
    """Every check for `settings.model_name` served with `argv` (the plan's vLLM command; None: the preset's
    flags and VLLM_ARGS). Checks that cannot be made pass with "not checked"."""
    model = settings.model_name
    if settings.model_is_local_path:
        info = inspect_local(model)
        files = _dir_files(info.local_dir)
        command = list(argv) if argv is not None else planned_argv(settings, info)
        return Report((_architecture(model, info, command, files, probe), judge_tokenizer(model, files, command)))
    revision = UserArgs(tuple(argv if argv is not None else settings.vllm_args)).value("--revision")
    repo: HubRepo | None = None
    findings: list[Finding] = []
    if not offline:
        repo = observe_hub(model, revision=revision, token=target.token, env=env)
        findings.append(judge_hub(repo, target.advice))
        if not findings[-1].ok:
            return Report(tuple(findings))
    token = target.token if isinstance(target.token, str) else None
    info = inspect_model(model, is_local=False, token=token, env=env)
    found = repo is not None and repo.answer is HubAnswer.FOUND
    files = list(repo.files) if repo is not None and found else _dir_files(info.local_dir)
    command = list(argv) if argv is not None else planned_argv(settings, info)
    findings += [_architecture(model, info, command, files, probe), judge_tokenizer(model, files, command)]
    if repo is not None and found:
        cached = cached_files(model, repo.sha, env) if target.use_cache else frozenset()
        need = download_bytes(repo.files, cached, ignore_patterns(repo.files))
        cache = hub_cache_dir(env)
        free = target.free_bytes if target.free_bytes is not None else free_bytes(cache)
        findings.append(judge_disk(need, free, target.where or str(cache), target.advice))
    return Report(tuple(findings))
