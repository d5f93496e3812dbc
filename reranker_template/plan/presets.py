"""Per-model-family vLLM flags, kept as data: one `Preset` per family, matched on the model id and config.json.

A reranker served with the wrong flags starts, answers 200 and returns meaningless scores (Qwen3-Reranker
without its score template: vLLM issues #55501, #20478, #21681). So every family we know gets exactly the
flags its authors document, and `reranker plan` says which preset matched and why.

The first preset in `PRESETS` that matches wins, so specific families come before generic ones. A preset
matches when one of its `ids` patterns is found in the model id (or local path), and, when config.json is
known, its architecture is one of `architectures` (for presets without `ids`, the architecture alone
decides). RERANKER_PRESET=<name> forces a preset; RERANKER_PRESET=none applies none.

A preset also says how a long pair is cut by default (`truncation`, see truncation.py): "pair" lets the
tokenizer cut the pair to the model's limit (the longer side first); "split" gives the query and the
document fixed token budgets before the prompt is composed, because cutting a composed prompt would cut
the template's tail (or, for jina-reranker-m0, the query), which is the very token the model scores.
Lengths (--max-model-len and friends) are lengths.py's, from the model's facts and the preset's hints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import PurePath

from reranker_template.errors import PlanError
from reranker_template.facts.model import ModelInfo
from reranker_template.facts.sentence_transformers import IDENTITY, SIGMOID, StReranker
from reranker_template.plan.contract import TruncationMode
from reranker_template.plan.flags import Flag
from reranker_template.settings import Settings, is_local_path

QWEN3_DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
NONE = "none"  # RERANKER_PRESET=none: apply no preset


class PresetKind(StrEnum):
    """What kind of model a family is: it decides how vLLM scores a pair."""

    CROSS_ENCODER = "cross-encoder"  # one forward pass over the joined pair, a classifier head
    LLM_RERANKER = "llm-reranker"  # a causal LM scored by token logits on a prompt format
    EMBEDDING = "embedding"  # not a reranker: cosine similarity of two embeddings


@dataclass(frozen=True)
class License:
    """A model family's licence as its model card states it; non-commercial ones are shown wherever the plan is."""

    name: str
    non_commercial: bool = False

    def describe(self) -> str:
        return f"{self.name}: non-commercial use only" if self.non_commercial else self.name


APACHE = License("Apache-2.0")
CC_BY_NC = License("CC-BY-NC-4.0", non_commercial=True)


@dataclass(frozen=True)
class Preset:
    """One model family: how to recognise it and the flags its authors document."""

    name: str
    family: str  # as users know it, for `reranker plan` and the README
    kind: PresetKind
    why: str  # one line: what goes wrong without this preset
    ids: tuple[str, ...] = ()  # regular expressions searched in the lower-cased model id / path
    architectures: tuple[str, ...] = ()  # config.json's architecture must match one of these when `ids` matched
    claims: tuple[str, ...] = ()  # architectures that select this preset whatever the model is called
    runner_pooling: bool = False
    convert_classify: bool = False  # --convert classify: any *ForCausalLM becomes a classifier (no architecture named)
    hf_overrides: Mapping[str, object] | None = None
    template: str | None = None  # file in reranker_template/plan/templates/
    takes_instruction: bool = False  # the template reads RERANK_INSTRUCTION
    trust_remote_code: bool = False
    truncation: TruncationMode = TruncationMode.PAIR
    context_hint: int | None = None  # the family's context length, used when config.json is unknown
    decoder_hint: bool | None = None  # decoder (True) or encoder-only (False) when config.json is unknown
    prefix_caching: bool = True  # for decoders: does a prefix repeat across one call's documents?
    pooler_config: Mapping[str, object] | None = None  # the authors' score calibration (logit_bias, logit_scale)
    calibration: str = ""  # what pooler_config reproduces, for the reason line
    license: License | None = None
    refusal: str = ""  # vLLM 0.32 cannot serve it right: why, and what to use instead (the plan stops)


# Not matched by name or architecture: chosen when the model ships a Sentence-Transformers v6 recipe
# (facts/sentence_transformers.py), before any family preset, because its own files say how it is scored.
SENTENCE_TRANSFORMERS_V6 = Preset(
    name="sentence-transformers-v6",
    family="a Sentence-Transformers v6 CrossEncoder on a causal LM (it ships its own prompt and head config)",
    kind=PresetKind.LLM_RERANKER,
    why="sentence-transformers scores it by its LogitScore token logits on its own chat template and prompt; "
    "vLLM 0.32 reads neither (vllm#31563 was closed)",
    runner_pooling=True,
    convert_classify=True,
    truncation=TruncationMode.SPLIT,
    decoder_hint=True,
)

PRESETS: tuple[Preset, ...] = (
    SENTENCE_TRANSFORMERS_V6,
    Preset(
        name="qwen3-reranker",
        family="Qwen3-Reranker 0.6B / 4B / 8B (original checkpoints)",
        kind=PresetKind.LLM_RERANKER,
        why="the checkpoint is a causal LM: vLLM must turn its 'yes'/'no' logits into a classifier, and score "
        "Qwen's prompt format (without the template: 200 OK and meaningless scores, vLLM #55501)",
        ids=(r"qwen3-reranker(?!.*seq-cls)",),
        architectures=(r"Qwen3ForCausalLM",),
        runner_pooling=True,
        hf_overrides={
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True,
        },
        template="qwen3_reranker.jinja",
        takes_instruction=True,
        truncation=TruncationMode.SPLIT,
        context_hint=40960,
        decoder_hint=True,
        license=APACHE,
    ),
    Preset(
        name="qwen3-reranker-seq-cls",
        family="Qwen3-Reranker, converted to sequence classification (e.g. tomaarsen/Qwen3-Reranker-*-seq-cls)",
        kind=PresetKind.LLM_RERANKER,
        why="the conversion keeps Qwen's prompt format: without the score template the scores are meaningless",
        ids=(r"qwen3-reranker",),  # after the originals: reached by -seq-cls names or this architecture
        architectures=(r"Qwen3ForSequenceClassification",),
        template="qwen3_reranker.jinja",
        takes_instruction=True,
        truncation=TruncationMode.SPLIT,
        context_hint=40960,
        decoder_hint=True,
    ),
    Preset(
        name="bge-reranker-v2-gemma",
        family="BAAI/bge-reranker-v2-gemma",
        kind=PresetKind.LLM_RERANKER,
        why="a Gemma causal LM scored by its 'Yes' logit on BAAI's prompt format",
        ids=(r"bge-reranker-v2-gemma",),
        architectures=(r"GemmaForCausalLM", r"GemmaForSequenceClassification"),
        runner_pooling=True,
        hf_overrides={
            "architectures": ["GemmaForSequenceClassification"],
            "classifier_from_token": ["Yes"],
            "method": "no_post_processing",
        },
        template="bge_reranker_v2_gemma.jinja",
        truncation=TruncationMode.SPLIT,
        context_hint=8192,
        decoder_hint=True,
    ),
    *(
        Preset(
            name=f"mxbai-rerank-{size}-v2",
            family=f"mixedbread-ai/mxbai-rerank-{size}-v2",
            kind=PresetKind.LLM_RERANKER,
            why="a Qwen2 causal LM scored by its '1' logit minus its '0' logit on mixedbread's prompt format",
            ids=(rf"mxbai-rerank-{size}-v2",),
            architectures=(r"Qwen2ForCausalLM", r"Qwen2ForSequenceClassification"),
            runner_pooling=True,
            hf_overrides={
                "architectures": ["Qwen2ForSequenceClassification"],
                "classifier_from_token": ["0", "1"],
                "method": "from_2_way_softmax",
            },
            template="mxbai_rerank_v2.jinja",
            truncation=TruncationMode.SPLIT,
            context_hint=32768,
            decoder_hint=True,
            # mxbai-rerank's own normalisation: sigmoid(logit - estimated_max / 2), estimated_max 9 (base), 12
            # (large); vLLM 0.32 calls the offset logit_mean (vllm#24031 named it logit_bias).
            pooler_config={"logit_mean": offset},
            calibration=f"sigmoid(logit - {offset}), mixedbread's own score normalisation for the {size} model "
            "(mxbai-rerank's predict(normalize=True)); without it every score sits near 1",
            license=APACHE,
        )
        for size, offset in (("base", 4.5), ("large", 6.0))
    ),
    Preset(
        name="mxbai-rerank-v2",
        family="mixedbread-ai mxbai-rerank v2, another size or a fine-tune",
        kind=PresetKind.LLM_RERANKER,
        why="a Qwen2 causal LM scored by its '1' logit minus its '0' logit on mixedbread's prompt format",
        ids=(r"mxbai-rerank-.*v2",),
        architectures=(r"Qwen2ForCausalLM", r"Qwen2ForSequenceClassification"),
        runner_pooling=True,
        hf_overrides={
            "architectures": ["Qwen2ForSequenceClassification"],
            "classifier_from_token": ["0", "1"],
            "method": "from_2_way_softmax",
        },
        template="mxbai_rerank_v2.jinja",
        truncation=TruncationMode.SPLIT,
        context_hint=32768,
        decoder_hint=True,
        license=APACHE,
    ),
    *(
        Preset(
            name=name,
            family=f"zeroentropy {name} (Qwen3-4B based)",
            kind=PresetKind.LLM_RERANKER,
            why="a Qwen3 causal LM scored by its 'Yes' logit with the query as the system turn and the document "
            "as the user turn (zerank's own predict)",
            ids=(pattern,),
            architectures=(r"Qwen3ForCausalLM", r"Qwen3ForSequenceClassification"),
            runner_pooling=True,
            hf_overrides={
                "architectures": ["Qwen3ForSequenceClassification"],
                "classifier_from_token": ["Yes"],
                "method": "no_post_processing",
            },
            template="zerank.jinja",
            truncation=TruncationMode.SPLIT,
            context_hint=32768,
            decoder_hint=True,
            pooler_config={"logit_sigma": 5.0},
            calibration="sigmoid(logit / 5), the score zeroentropy's model card tells users to compute "
            "(vllm#39435 named the divisor logit_scale 0.2)",
            license=license,
        )
        for name, pattern, license in (
            ("zerank-1-small", r"zerank-1-small", APACHE),
            # zerank-1's cards disagree (CC-BY-NC-4.0 and Apache-2.0): the stricter is stated
            ("zerank-1", r"zerank-1(?!-small)", CC_BY_NC),
            ("zerank-2", r"zerank-2", CC_BY_NC),
        )
    ),
    Preset(
        name="ctxl-rerank-v2",
        family="ContextualAI ctxl-rerank-v2-instruct-multilingual 1b / 2b / 6b",
        kind=PresetKind.LLM_RERANKER,
        why="a causal LM scored by the logit of token id 0 ('!') after Contextual AI's prompt, document first",
        ids=(r"ctxl-rerank-v2",),
        architectures=(r"\w+ForCausalLM",),
        runner_pooling=True,
        convert_classify=True,
        hf_overrides={"classifier_from_token": ["!"], "method": "no_post_processing"},
        template="ctxl_rerank_v2.jinja",
        truncation=TruncationMode.SPLIT,
        prefix_caching=False,  # the document comes first: no prefix repeats across documents
        context_hint=32768,
        decoder_hint=True,
        pooler_config={"use_activation": False},
        calibration="the raw logit, as Contextual AI's model card scores (no sigmoid): higher is more relevant",
        license=License("CC-BY-NC-SA-4.0", non_commercial=True),
    ),
    Preset(
        name="jina-reranker-m0",
        family="jinaai/jina-reranker-m0 (text and image documents)",
        kind=PresetKind.LLM_RERANKER,
        why="supported natively (JinaVLForRanking); vLLM builds its prompt itself, document first, query last",
        prefix_caching=False,  # the document comes first: no prefix repeats across documents
        ids=(r"jina-reranker-m0",),
        architectures=(r"JinaVLForRanking", r"JinaVLForSequenceClassification"),
        claims=(r"JinaVLForRanking", r"JinaVLForSequenceClassification"),
        runner_pooling=True,
        truncation=TruncationMode.SPLIT,
        context_hint=32768,
        decoder_hint=True,
        license=CC_BY_NC,
    ),
    Preset(
        name="llama-nemotron-rerank",
        family="nvidia llama-nemotron-rerank-1b-v2 / -500m-v2",
        kind=PresetKind.CROSS_ENCODER,
        why="a bidirectional Llama, mean-pooled, scored on NVIDIA's 'question:{q} \\n \\n passage:{d}' prompt "
        "(vLLM would otherwise join the pair with the tokenizer's separator)",
        ids=(r"llama-nemotron-rerank(?!-vl)",),
        architectures=(r"LlamaBidirectionalForSequenceClassification",),
        claims=(r"LlamaBidirectionalForSequenceClassification",),
        trust_remote_code=True,
        template="nemotron_rerank.jinja",
        truncation=TruncationMode.SPLIT,
        context_hint=8192,
        decoder_hint=False,
        license=License("NVIDIA Open Model License, with the Llama 3.2 Community License"),
    ),
    Preset(
        name="gte-reranker-modernbert",
        family="Alibaba-NLP/gte-reranker-modernbert-base",
        kind=PresetKind.CROSS_ENCODER,
        why="a ModernBERT cross-encoder vLLM serves natively (sigmoid of its logit, as sentence-transformers "
        "scores it); only the lengths are set",
        ids=(r"gte-reranker-modernbert",),
        architectures=(r"ModernBertForSequenceClassification",),
        context_hint=8192,
        decoder_hint=False,
        license=APACHE,
    ),
    Preset(
        name="jina-reranker-v3",
        family="jinaai/jina-reranker-v3 (listwise, JinaForRanking)",
        kind=PresetKind.LLM_RERANKER,
        why="a listwise reranker: every document in one prompt, scored by cosine of projected embeddings",
        ids=(r"jina-reranker-v3",),
        claims=(r"JinaForRanking",),
        license=CC_BY_NC,
        refusal="vLLM 0.32 has its model class, but its scores are not verified against Jina's reference here, "
        "and Jina's rerank() does what vLLM does not (query cut to 512 and documents to 2048 tokens, blocks "
        "of 125 documents, the query embedding averaged across blocks), so long calls would score "
        "differently. Use jinaai/jina-reranker-m0 (also CC-BY-NC-4.0, text and images) or "
        "Qwen/Qwen3-Reranker-0.6B (Apache-2.0).",
    ),
    Preset(
        name="qwen3-vl-reranker",
        family="Qwen/Qwen3-VL-Reranker 2B / 8B",
        kind=PresetKind.LLM_RERANKER,
        why="a Qwen3-VL causal LM scored by its yes/no logits on Qwen's multimodal prompt",
        ids=(r"qwen3-vl-reranker",),
        license=APACHE,
        refusal="its vLLM serving has open upstream bugs (vllm#33464: the 8B fails to load; vllm#33885: image "
        "scores near 0.5 and differences from transformers) and no tiny model of it matches its reference "
        "here. Use Qwen/Qwen3-Reranker-0.6B / 4B / 8B for text, jinaai/jina-reranker-m0 for images.",
    ),
    Preset(
        name="gte-multilingual-reranker",
        family="Alibaba-NLP/gte-multilingual-reranker-base",
        kind=PresetKind.CROSS_ENCODER,
        why="its config.json names a custom class (NewForSequenceClassification); vLLM implements it as "
        "GteNewForSequenceClassification",
        ids=(r"gte-multilingual-reranker",),
        architectures=(r"NewForSequenceClassification", r"GteNewForSequenceClassification"),
        claims=(r"NewForSequenceClassification",),
        hf_overrides={"architectures": ["GteNewForSequenceClassification"]},
        trust_remote_code=True,
        context_hint=8192,
        decoder_hint=False,
        license=APACHE,
    ),
    Preset(
        name="bge-reranker",
        family="BAAI/bge-reranker-base / large / v2-m3 (XLM-RoBERTa cross-encoders)",
        kind=PresetKind.CROSS_ENCODER,
        why="a standard cross-encoder: vLLM detects it; only the lengths are set",
        ids=(r"bge-reranker",),
        architectures=(r"XLMRobertaForSequenceClassification", r"\w+ForSequenceClassification"),
        decoder_hint=False,
    ),
    Preset(
        name="cross-encoder",
        family="any *ForSequenceClassification cross-encoder (BERT, XLM-R, ModernBERT, ...)",
        kind=PresetKind.CROSS_ENCODER,
        why="vLLM detects sequence-classification checkpoints as rerankers; only the lengths are set",
        claims=(r"\w+ForSequenceClassification",),
    ),
    Preset(
        name="embedding",
        family="embedding models (all-MiniLM, bge-*-en, e5, gte, Qwen3-Embedding, ...)",
        kind=PresetKind.EMBEDDING,
        why="not a reranker: vLLM scores a pair by the cosine similarity of the two embeddings",
        ids=(r"embed", r"minilm", r"mpnet", r"(^|[/_-])e5-", r"bge-(small|base|large|m3)", r"(^|/)gte-"),
        architectures=(r"\w+Model", r"\w+ForMaskedLM", r"\w+ForCausalLM"),
        claims=(r"\w+Model", r"\w+ForMaskedLM"),
        runner_pooling=True,
    ),
)

PRESET_NAMES = tuple(p.name for p in PRESETS)


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
        Flag("--hf-overrides", json.dumps(overrides, separators=(",", ":")), f"{name}: its LogitScore scores {scored}"),
        Flag(
            "--chat-template",
            st_v6_template(st),
            f"{name}: its own chat_template.jinja, with its default prompt {st.prompt!r} as the system message",
        ),
    ]
    if st.activation == IDENTITY:
        flags.append(Flag("--pooler-config", '{"use_activation":false}', f"{name}: its activation is Identity"))
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
        flags.append(
            Flag(
                "--hf-overrides", json.dumps(preset.hf_overrides, separators=(",", ":")), f"{preset.name}: {preset.why}"
            )
        )
    if preset.pooler_config:
        flags.append(
            Flag(
                "--pooler-config",
                json.dumps(preset.pooler_config, separators=(",", ":")),
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
