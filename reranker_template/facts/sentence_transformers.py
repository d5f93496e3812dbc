"""A Sentence-Transformers v6 reranker's own scoring recipe, read from the files it ships.

Sentence-Transformers v6 saves a CrossEncoder built on a causal LM with everything needed to score it:
`modules.json` names a LogitScore module whose `config.json` holds the scored token ids (`true_token_id`,
and `false_token_id` for a difference of two logits), `config_sentence_transformers.json` holds the
activation and the prompts (the default one is sent as a system message before the query and the
document), and `chat_template.jinja` renders the messages (roles system, query, document). vLLM 0.32 reads
none of these (vllm#31563 was closed), so the plan turns them into vLLM flags (plan/presets.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reranker_template.fileio import read_json_object

# The files that describe the recipe; `inspect_hub` fetches them (with the LogitScore config) when a hub
# model has config_sentence_transformers.json. tokenizer.json turns the token ids into vLLM's token strings.
RECIPE_FILES = ("modules.json", "config_sentence_transformers.json", "chat_template.jinja", "tokenizer.json")
LOGIT_SCORE_TYPE = "LogitScore"
SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"


@dataclass(frozen=True)
class StReranker:
    """How sentence-transformers scores this model: token(s), activation, default prompt, chat template."""

    true_token: str
    false_token: str | None  # None: the score is the true token's logit alone
    activation: str  # the class path config_sentence_transformers.json names (SIGMOID when absent)
    prompt: str | None  # the default prompt, sent as a system message
    chat_template: str


def logit_score_dir(directory: Path) -> str | None:
    """The LogitScore module's sub-directory named by modules.json (a JSON list), or None when there is none."""
    try:
        modules: Any = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(modules, list):
        return None
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith(LOGIT_SCORE_TYPE):
            return str(module.get("path") or "")
    return None


def _token_strings(directory: Path) -> dict[int, str]:
    """id -> token string from tokenizer.json (the vocabulary and the added tokens)."""
    data = read_json_object(directory / "tokenizer.json")
    if data is None:
        return {}
    vocab = (data.get("model") or {}).get("vocab") or {}
    strings = {int(i): str(t) for t, i in vocab.items()} if isinstance(vocab, dict) else {}
    for added in data.get("added_tokens") or []:
        strings[int(added["id"])] = str(added["content"])
    return strings


def read_st_reranker(directory: Path) -> StReranker | None:
    """The recipe, or None when the directory is not a Sentence-Transformers v6 causal-LM CrossEncoder (or a
    file it needs is missing or unreadable: then the model is planned like any other)."""
    config = read_json_object(directory / "config_sentence_transformers.json")
    sub = logit_score_dir(directory)
    if config is None or config.get("model_type") != "CrossEncoder" or sub is None:
        return None
    head = read_json_object(directory / sub / "config.json")
    template = directory / "chat_template.jinja"
    if head is None or not template.is_file():
        return None
    strings = _token_strings(directory)
    false_id = head.get("false_token_id")
    if head.get("true_token_id") not in strings or (false_id is not None and false_id not in strings):
        return None
    prompts = config.get("prompts") or {}
    default = config.get("default_prompt_name")
    return StReranker(
        true_token=strings[head["true_token_id"]],
        false_token=strings.get(false_id) if false_id is not None else None,
        activation=str(config.get("activation_fn") or SIGMOID),
        prompt=str(prompts[default]) if isinstance(prompts, dict) and default in prompts else None,
        chat_template=template.read_text(encoding="utf-8"),
    )
