"""Choosing a model's preset (plan/families.py holds them) and turning it into vLLM flags, with reasons.

A preset is matched on the model id and config.json (a Sentence-Transformers v6 reranker by its own
recipe files first); RERANKER_PRESET=<name> forces one, RERANKER_PRESET=none applies none. `reranker
plan` says which preset matched and why. Lengths (--max-model-len and friends) are lengths.py's, from the
model's facts and the preset's hints.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePath

from reranker_template.errors import PlanError
from reranker_template.facts.model import ModelInfo
from reranker_template.facts.sentence_transformers import IDENTITY, SIGMOID, StReranker
from reranker_template.plan.contract import TruncationMode
from reranker_template.plan.families import PRESET_NAMES, PRESETS, SENTENCE_TRANSFORMERS_V6, License, Preset
from reranker_template.plan.flags import Flag
from reranker_template.settings import Settings, is_local_path

QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
NONE = "none"  # RERANKER_PRESET=none: apply no preset


@dataclass(frozen=True)
class PresetChoice:
    """The chosen preset (None: no family flags), its flags, and why it was chosen."""

    preset: Preset | None
    reasons: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()

    @property
    def name(self) -> str | None:
        return self.preset.name if self.preset else None

    @property
    def license(self) -> License | None:
        return self.preset.license if self.preset else None

    @property
    def truncation(self) -> TruncationMode:
        """How this family's requests are cut (plan/truncation.py); "pair" without a preset."""
        return self.preset.truncation if self.preset else TruncationMode.PAIR


def preset_by_name(name: str | None) -> Preset | None:
    return next((p for p in PRESETS if p.name == name), None)


def template_path(name: str) -> str:
    """Absolute path of a template shipped in this package (vLLM's own are not in its wheel or image)."""
    return str(resources.files("reranker_template.plan") / "templates" / name)


def qwen3_template(instruction: str | None) -> str:
    """The value for `--chat-template`: our file, or (for a custom RERANK_INSTRUCTION) the template itself.

    vLLM has no server-side default for a score template's variables, so a custom default instruction is
    written into the template text; vLLM accepts a template given inline (a value that is not a file and
    contains Jinja characters). A request can still send its own `instruction`.
    """
    path = template_path("qwen3_reranker.jinja")
    if not instruction or instruction == QWEN3_DEFAULT_INSTRUCTION:
        return path
    text = resources.files("reranker_template.plan").joinpath("templates", "qwen3_reranker.jinja").read_text()
    line = f'{{%- set default_instruction = "{QWEN3_DEFAULT_INSTRUCTION}" -%}}'
    if line not in text:  # pragma: no cover - guards the template file and this function staying in step
        raise RuntimeError("qwen3_reranker.jinja no longer sets default_instruction")
    # json.dumps gives a string literal Jinja reads back unchanged (quotes, backslashes, newlines escaped).
    text = re.sub(r"\{#-.*?-#\}\n", "", text, flags=re.S)  # comments: the command line stays readable
    return text.replace(line, "{%- set default_instruction = " + json.dumps(instruction) + " -%}")


def _compact_json(value: object) -> str:
    """A JSON flag value without spaces: one shell word in `reranker plan`'s command line."""
    return json.dumps(value, separators=(",", ":"))


def st_v6_template(st: StReranker) -> str:
    """The model's own chat template, given the system message sentence-transformers adds: the request's
    `instruction` when it sends one (it replaces the prompt, as `predict(prompt=...)` does), else the model's
    default prompt. vLLM passes only the query and document messages, so the template adds the system one."""
    prompt = json.dumps(st.prompt or "")  # a Jinja string literal that reads back unchanged
    return (
        f"{{%- set default_prompt = {prompt} -%}}\n"
        "{%- set prompt = instruction if instruction is defined and instruction is string and instruction "
        "else default_prompt -%}\n"
        '{%- if prompt -%}{%- set messages = [{"role": "system", "content": prompt}] + messages -%}{%- endif -%}\n'
        + st.chat_template
    )


def st_v6_flags(st: StReranker) -> list[Flag]:
    """--hf-overrides, --chat-template and the activation from a Sentence-Transformers v6 recipe."""
    name = SENTENCE_TRANSFORMERS_V6.name
    if st.false_token is None:
        overrides: dict[str, object] = {"classifier_from_token": [st.true_token], "method": "no_post_processing"}
        scored = f"the logit of {st.true_token!r}"
    else:
        overrides = {"classifier_from_token": [st.false_token, st.true_token], "method": "from_2_way_softmax"}
        scored = f"logit({st.true_token!r}) - logit({st.false_token!r})"
    flags = [
        Flag("--hf-overrides", _compact_json(overrides), f"{name}: its LogitScore scores {scored}"),
        Flag(
            "--chat-template",
            st_v6_template(st),
            f"{name}: its own chat_template.jinja, with its default prompt {st.prompt!r} as the system message",
        ),
    ]
    if st.activation == IDENTITY:
        flags.append(
            Flag("--pooler-config", _compact_json({"use_activation": False}), f"{name}: its activation is Identity")
        )
    elif st.activation != SIGMOID:
        raise PlanError(
            f"{SENTENCE_TRANSFORMERS_V6.family}: its activation_fn {st.activation} has no vLLM equivalent "
            "(Sigmoid and Identity have): set RERANKER_PRESET and VLLM_ARGS yourself."
        )
    return flags


def _matching(patterns: tuple[str, ...], architectures: tuple[str, ...]) -> str | None:
    return next((arch for arch in architectures for pattern in patterns if re.fullmatch(pattern, arch)), None)


def _model_id(model: str) -> str:
    """A hub id as given; a local directory by its own name (the path above it says nothing about the model)."""
    return (PurePath(model.rstrip("/")).name if is_local_path(model) else model).lower()


def match_preset(settings: Settings, model: ModelInfo) -> tuple[Preset | None, str]:
    """The first preset that fits the model, and why it fits."""
    if model.st_reranker is not None:
        return SENTENCE_TRANSFORMERS_V6, (
            "its Sentence-Transformers v6 files (modules.json's LogitScore, config_sentence_transformers.json, "
            "chat_template.jinja) say how it is scored"
        )
    model_id = _model_id(settings.model_name or model.name)
    archs = model.architectures
    for preset in PRESETS:
        id_hit = next((p for p in preset.ids if re.search(p, model_id)), None)
        if id_hit:
            if archs and preset.architectures and not _matching(preset.architectures, archs):
                continue  # e.g. a -seq-cls conversion under an original's name: config.json decides
            how = f"the model id matches {id_hit!r}"
            return preset, how + (f" and config.json says {', '.join(archs)}" if archs else " (config.json unknown)")
        claimed = _matching(preset.claims, archs)
        if claimed:
            return preset, f"config.json's architecture is {claimed}"
    return None, ""


def preset_flags(settings: Settings, preset: Preset) -> list[Flag]:
    flags: list[Flag] = []
    if preset.runner_pooling:
        flags.append(Flag("--runner", "pooling", f"{preset.name}: serve it as a scoring (pooling) model"))
    if preset.convert_classify:
        flags.append(Flag("--convert", "classify", f"{preset.name}: turn the causal LM into a one-logit classifier"))
    if preset.hf_overrides:
        flags.append(Flag("--hf-overrides", _compact_json(preset.hf_overrides), f"{preset.name}: {preset.why}"))
    if preset.pooler_config:
        flags.append(
            Flag(
                "--pooler-config",
                _compact_json(preset.pooler_config),
                f"{preset.name}: {preset.calibration}",
            )
        )
    if preset.trust_remote_code:
        flags.append(
            Flag("--trust-remote-code", None, f"{preset.name}: its config.json needs the model's own config class")
        )
    if preset.template:
        if preset.takes_instruction:
            value = qwen3_template(settings.rerank_instruction)
            instruction = settings.rerank_instruction or QWEN3_DEFAULT_INSTRUCTION
            source = "RERANK_INSTRUCTION" if settings.rerank_instruction else "Qwen's default instruction"
            why = (
                f"{preset.name}: our score template ({source}: {instruction!r}; "
                'a request may send its own "instruction")'
            )
        else:
            value = template_path(preset.template)
            why = f"{preset.name}: the score template with the prompt format the model was trained on"
        flags.append(Flag("--chat-template", value, why))
    return flags


def _pick(settings: Settings, model: ModelInfo) -> tuple[Preset | None, str]:
    """The preset RERANKER_PRESET forces, or the one that matches, and the reason shown for it."""
    if settings.preset == NONE:
        return None, "preset: none (RERANKER_PRESET=none): no family flags; lengths still follow the model"
    if settings.preset:
        forced = preset_by_name(settings.preset)
        if forced is None:
            raise PlanError(
                f"RERANKER_PRESET={settings.preset!r} is not a preset: use one of {', '.join(PRESET_NAMES)}, or none."
            )
        return forced, f"preset: {forced.name} (forced by RERANKER_PRESET): {forced.family}"
    matched, how = match_preset(settings, model)
    if matched is None:
        known = ", ".join(model.architectures) or "unknown"
        return None, (
            f"preset: none matched (architecture {known}); vLLM's defaults apply. RERANKER_PRESET=<name> forces one"
        )
    return matched, f"preset: {matched.name} ({matched.family}), because {how}"


def choose_preset(settings: Settings, model: ModelInfo) -> PresetChoice:
    """The preset for this model (forced by RERANKER_PRESET, or matched), with its flags and reasons."""
    preset, why = _pick(settings, model)
    if preset is not None and preset.refusal:
        raise PlanError(
            f"{settings.model_name} ({preset.family}) is not served: {preset.refusal} "
            "To try it anyway (unverified): RERANKER_PRESET=none, with the upstream recipe's flags in VLLM_ARGS."
        )
    reasons = [why]
    if preset is not None and preset.license:
        reasons.append(f"license: {preset.family}: {preset.license.describe()} (as its model card states)")
    if preset is SENTENCE_TRANSFORMERS_V6:
        if model.st_reranker is None:
            raise PlanError(
                f"RERANKER_PRESET={preset.name} needs the model's Sentence-Transformers v6 files (modules.json with "
                "a LogitScore module, config_sentence_transformers.json, chat_template.jinja, tokenizer.json): "
                f"{settings.model_name} has none that are readable."
            )
        flags = preset_flags(settings, preset) + st_v6_flags(model.st_reranker)
    else:
        flags = preset_flags(settings, preset) if preset else []
    return PresetChoice(preset=preset, reasons=tuple(reasons), flags=tuple(flags))
