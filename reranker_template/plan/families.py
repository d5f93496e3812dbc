"""The reranker families we know, as data: one `Preset` per family, with the flags its authors document.

A reranker served with the wrong flags starts, answers 200 and returns meaningless scores (Qwen3-Reranker
without its score template: vLLM issues #55501, #20478, #21681). So every family we know gets exactly the
flags its authors document, its licence as its model card states it, and, for a family vLLM 0.32 cannot
serve right, a refusal that says what to use instead. How a preset is chosen and turned into flags is
presets.py's.

The first preset in `PRESETS` that matches wins, so specific families come before generic ones. A preset
matches when one of its `ids` patterns is found in the model id (or local path), and, when config.json is
known, its architecture is one of `architectures` (for presets without `ids`, the architecture alone
decides, through `claims`).

A preset also says how a long pair is cut by default (`truncation`, see truncation.py): "pair" lets the
tokenizer cut the pair to the model's limit (the longer side first); "split" gives the query and the
document fixed token budgets before the prompt is composed, because cutting a composed prompt would cut
the template's tail (or, for jina-reranker-m0, the query), which is the very token the model scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from reranker_template.plan.contract import TruncationMode


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
    pooler_config: Mapping[str, object] | None = None  # the authors' score calibration (logit_mean, logit_sigma)
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

MXBAI_RERANK_V2 = Preset(
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
        # mxbai-rerank's own normalisation: sigmoid(logit - estimated_max / 2), estimated_max 9 (base), 12
        # (large); vLLM 0.32 calls the offset logit_mean (vllm#24031 named it logit_bias).
        replace(
            MXBAI_RERANK_V2,
            name=f"mxbai-rerank-{size}-v2",
            family=f"mixedbread-ai/mxbai-rerank-{size}-v2",
            ids=(rf"mxbai-rerank-{size}-v2",),
            pooler_config={"logit_mean": offset},
            calibration=f"sigmoid(logit - {offset}), mixedbread's own score normalisation for the {size} model "
            "(mxbai-rerank's predict(normalize=True)); without it every score sits near 1",
        )
        for size, offset in (("base", 4.5), ("large", 6.0))
    ),
    MXBAI_RERANK_V2,  # another size or a fine-tune: no calibration we know
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
