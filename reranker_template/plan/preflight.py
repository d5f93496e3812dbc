"""Preflight verdicts: can this model be served, judged from cheap observations before anything is downloaded.

Pure: the facts come in (facts/hub.py, facts/disk.py, facts/model.py, facts/transformers_backend.py), one
`Finding` per check goes out, and a failed check's message is one sentence that says what to change. The
checks, in the order they run:
- hub: the repository exists, this token may read it (private, gated), the revision exists;
- architecture: the installed vLLM serves it as a scorer (cross-encoder, embedding, late interaction), directly,
  by converting it (a preset's --hf-overrides), or through its Transformers backend (plan/vllm_models.py);
- tokenizer: the model has tokenizer files (without them vLLM 0.32 starts anyway, with a stand-in tokenizer that
  turns every word into the unknown token: /tokenize "green tea" gave [CLS] [UNK] [UNK] [SEP], scores meaningless);
- disk: the files still to download fit the cache volume, with a margin for vLLM's own caches.
A check that cannot be made (the hub does not answer, config.json unknown) passes and says it was not made:
preflight never stops a start it cannot prove broken.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reranker_template.facts.hub import HubAnswer, HubRepo
from reranker_template.plan.user_args import UserArgs
from reranker_template.plan.vllm_models import Runner, runner_for
from reranker_template.release import VLLM_VERSION

GIB = 1024**3
MIN_DISK_MARGIN = GIB  # vLLM's compile cache and the download's temporary files live on the same volume
# Files any of the tokenizers vLLM loads is read from (Hugging Face fast/slow, SentencePiece, tiktoken, Mistral).
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "tekken.json",
    }
)


@dataclass(frozen=True)
class Finding:
    """One check's verdict; `message` says what was found, or (failed) what to change, in one sentence."""

    check: str  # "hub", "architecture", "tokenizer", "disk"
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'FAILED'} {self.check}: {self.message}"


@dataclass(frozen=True)
class Advice:
    """How a user fixes things where the model will run: the stack's settings, or `reranker vast launch`'s flags."""

    set_token: str = "set HF_TOKEN to a token of an account that can read it"
    bigger_disk: str = "free space there, or point HF_HOME at a bigger volume"  # "{gb}": the GB a disk needs


def size_text(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{max(n, 0) / 1024**2:.0f} MiB"


def judge_hub(repo: HubRepo, advice: Advice) -> Finding:
    """The hub's answer about the repository as a verdict."""
    model, answer = repo.model, repo.answer
    if answer is HubAnswer.FOUND:
        at = f"revision {repo.revision}" if repo.revision else "main"
        gated = ", gated: access granted" if repo.gated else ""
        return Finding("hub", True, f"{model} found ({at} = {(repo.sha or '?')[:12]}, {len(repo.files)} files{gated})")
    if answer is HubAnswer.UNREACHABLE:
        return Finding("hub", True, f"not checked: the hub did not answer ({repo.detail or 'no answer'})")
    if answer is HubAnswer.NOT_FOUND:
        if repo.token_given:
            why = f"no model {model} on the hub that this HF_TOKEN can read: check the name, and that the token's "
            return Finding("hub", False, why + "account can see the repository if it is private")
        why = f"no model {model} on the hub: check the name (a private model also needs a token: {advice.set_token})"
        return Finding("hub", False, why)
    if answer is HubAnswer.GATED:
        if repo.token_given:
            why = f"{model} is gated and HF_TOKEN's account has no access yet: accept its licence at {repo.url} "
            return Finding("hub", False, why + "with that account (some need the authors' approval), then start again")
        return Finding("hub", False, f"{model} is gated: accept its licence at {repo.url}, then {advice.set_token}")
    if answer is HubAnswer.NO_REVISION:
        why = f"{model} has no revision {repo.revision!r} on the hub: give --revision a branch, tag or commit of it"
        return Finding("hub", False, why)
    return Finding(
        "hub",
        False,
        "the hub refused HF_TOKEN as invalid: create a read token at https://huggingface.co/settings/"
        "tokens and use it as HF_TOKEN",
    )


def _overridden_architectures(argv: Sequence[str]) -> tuple[str, ...]:
    raw = UserArgs(tuple(argv)).value("--hf-overrides")
    try:
        overrides: Any = json.loads(raw) if raw else {}
    except ValueError:
        return ()
    archs = overrides.get("architectures") if isinstance(overrides, dict) else None
    return tuple(str(a) for a in archs) if isinstance(archs, list) else ()


def served_architectures(config: Mapping[str, Any], argv: Sequence[str]) -> tuple[str, ...]:
    """The architectures vLLM will resolve: --hf-overrides' when the command sets them, else config.json's."""
    return _overridden_architectures(argv) or tuple(str(a) for a in config.get("architectures") or ())


def _asks_for_pooling(argv: Sequence[str]) -> bool:
    """--runner pooling, or a --convert to a pooling model: vLLM then scores with any architecture it has."""
    args = UserArgs(tuple(argv))
    return args.value("--runner") == "pooling" or (args.value("--convert") or "auto") not in ("auto", "none")


def _custom_code(config: Mapping[str, Any]) -> bool:
    auto_map = config.get("auto_map")
    return isinstance(auto_map, Mapping) and bool(auto_map)


def probe_candidate(config: Mapping[str, Any], argv: Sequence[str]) -> str | None:
    """The architecture to ask transformers about (facts/transformers_backend.py), when only that can tell:
    vLLM has no implementation of it and it is not custom code (which needs --trust-remote-code first)."""
    archs = served_architectures(config, argv)
    if not archs or any(runner_for(a) for a in archs) or _custom_code(config):
        return None
    return archs[0]


def judge_architecture(
    model: str,
    config: Mapping[str, Any],
    argv: Sequence[str],
    *,
    sentence_transformers: bool = False,
    transformers_serves: bool | None = None,
) -> Finding:
    """Can the installed vLLM score with this model? `sentence_transformers`: the model has a modules.json (vLLM
    then pools even a *ForCausalLM); `transformers_serves`: the probe's answer for an unregistered architecture."""
    archs = served_architectures(config, argv)
    if not archs:
        return Finding("architecture", True, "not checked: config.json is unknown")
    shown = ", ".join(archs)
    runners = {runner_for(a) for a in archs} - {None}
    if Runner.POOLING in runners:
        return Finding("architecture", True, f"{shown}: vLLM {VLLM_VERSION} serves it as a scoring model")
    if runners:  # known to vLLM, but as a text generator
        if _asks_for_pooling(argv) or sentence_transformers:
            return Finding("architecture", True, f"{shown}: vLLM {VLLM_VERSION} scores with it as a pooling model")
        why = f"{model} is a text-generation model ({shown}), not a reranker: vLLM would serve it without /rerank and "
        fix = "/score; serve a reranker, or score by its embeddings with RERANKER_PRESET=embedding (or --runner "
        return Finding("architecture", False, why + fix + "pooling in VLLM_ARGS)")
    return _unimplemented(model, shown, config, argv, transformers_serves)


def _unimplemented(
    model: str, shown: str, config: Mapping[str, Any], argv: Sequence[str], transformers_serves: bool | None
) -> Finding:
    """The verdict for an architecture vLLM has no implementation of: custom code, or transformers' class."""
    if _custom_code(config):
        if "--trust-remote-code" in UserArgs(tuple(argv)).options():
            why = f"{shown}: the repository's own code, run by vLLM's Transformers backend (--trust-remote-code)"
            return Finding("architecture", True, why)
        why = f"{model}'s architecture {shown} is code shipped in the repository, which vLLM runs only with "
        return Finding("architecture", False, why + "--trust-remote-code: add it to VLLM_ARGS if you trust that code")
    if transformers_serves:
        why = f"{shown}: not implemented by vLLM {VLLM_VERSION}, served through its Transformers backend"
        return Finding("architecture", True, why)
    if transformers_serves is None:
        why = f"not checked: {shown} is not implemented by vLLM {VLLM_VERSION}, and transformers is not installed "
        return Finding("architecture", True, why + "here to tell whether vLLM's Transformers backend can serve it")
    why = f"vLLM {VLLM_VERSION} cannot serve {model}: its architecture {shown} is neither implemented by vLLM nor "
    fix = "usable through its Transformers backend; choose a model vLLM supports (e.g. a "
    return Finding(
        "architecture",
        False,
        why + fix + "BertForSequenceClassification or XLMRobertaForSequenceClassification cross-encoder)",
    )


def judge_tokenizer(model: str, files: Collection[str], argv: Sequence[str]) -> Finding:
    """The model's own tokenizer files, unless --tokenizer names another source (or vLLM is told to skip it)."""
    options = UserArgs(tuple(argv)).options()
    if options.get("--tokenizer"):
        return Finding("tokenizer", True, f"from --tokenizer {options['--tokenizer']}")
    if "--skip-tokenizer-init" in options:
        return Finding("tokenizer", True, "not needed (--skip-tokenizer-init)")
    if not files:
        return Finding("tokenizer", True, "not checked: the model's file list is unknown")
    names = {name.rsplit("/", 1)[-1] for name in files if "/" not in name}
    found = sorted(names & TOKENIZER_FILES) or sorted(n for n in names if n.endswith(".tiktoken"))
    if found:
        return Finding("tokenizer", True, ", ".join(found))
    why = f"{model} has no tokenizer files (tokenizer.json, tokenizer_config.json, vocab.txt, ...), so vLLM would "
    fix = "read every word as unknown and score nonsense: add them to the model, or name a model that has them "
    return Finding("tokenizer", False, why + fix + "with --tokenizer in VLLM_ARGS")


def download_bytes(files: Mapping[str, int], cached: Collection[str], ignore: Sequence[str]) -> int:
    """Bytes still to download: the repository's files minus the formats we skip and what the cache holds."""
    return sum(
        size
        for name, size in files.items()
        if name not in cached and not any(fnmatch.fnmatch(name, pattern) for pattern in ignore)
    )


def disk_margin(need: int) -> int:
    return max(need // 10, MIN_DISK_MARGIN)


def judge_disk(need: int, free: int | None, where: str, advice: Advice) -> Finding:
    """The files still to download, plus a margin (10%, at least 1 GiB), must fit the free space of `where`."""
    if need <= 0:
        return Finding("disk", True, "every file is in the Hugging Face cache already")
    if free is None:
        return Finding("disk", True, f"not checked: the free space of {where} cannot be read")
    margin = disk_margin(need)
    if free >= need + margin:
        return Finding("disk", True, f"{size_text(need)} to download, {size_text(free)} free in {where}")
    why = f"the model's files need {size_text(need)} (and {size_text(margin)} to spare) but only {size_text(free)} "
    gb = -(-(need + margin) // 10**9)  # what a disk sold in GB must have, rounded up
    return Finding("disk", False, why + f"is free in {where}: {advice.bigger_disk.format(gb=gb)}")
