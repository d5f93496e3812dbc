"""Model presets: `reranker plan` gives each model family the flags its authors document, and says why.

Table-driven on facts: hub models as the offline Hugging Face cache describes them (support.nvidia's
`cached_models`, from tests/fixtures/models), other families from config.json files written here as their
checkpoints ship them; settings + facts -> plan with `make_plan`, in milliseconds. Two cases run end to end
through `reranker plan` on a `Box`. No vLLM and no network: nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.nvidia import Box, cached_models, plan_on
from transformers.utils.chat_template_utils import _compile_jinja_template

from reranker_template import cli
from reranker_template.errors import PlanError
from reranker_template.facts.model import ModelInfo, ModelSource, inspect_local
from reranker_template.plan.contract import Plan, TruncationMode, TruncationPolicy
from reranker_template.plan.families import PRESETS, PresetKind
from reranker_template.plan.presets import QWEN3_DEFAULT_INSTRUCTION, match_preset, qwen3_template, template_path
from reranker_template.plan.truncation import apply_default_truncation
from reranker_template.plan.user_args import UserArgs
from reranker_template.settings import load_settings

QWEN_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
# Qwen's published prompt format (Qwen3-Reranker model card), the reference for our template.
QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    return cached_models(tmp_path_factory.mktemp("hf") / "hub")


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)


def flags(plan: Plan) -> UserArgs:
    """The vLLM command, read the way vLLM reads it."""
    return UserArgs(plan.vllm_command)


def write_model(
    base: Path,
    name: str,
    config: dict[str, Any],
    tokenizer_config: dict[str, Any] | None = None,
    sentence_bert: dict[str, Any] | None = None,
) -> ModelInfo:
    """A local model directory with the metadata files its checkpoint ships (no weights needed to plan),
    and the facts `inspect_local` reads from it."""
    directory = base / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if sentence_bert is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps(sentence_bert))
    return inspect_local(str(directory))


def render(template: str, query: str, document: str, **kwargs: str) -> str:
    """Render a score template the way vLLM does (transformers' Jinja environment, query/document roles)."""
    rendered: str = _compile_jinja_template(template).render(
        messages=[{"role": "query", "content": query}, {"role": "document", "content": document}], **kwargs
    )
    return rendered


# --- the models the project names, as the Hugging Face cache describes them ---------------------------------

# model -> (preset, expected flags: value, None for a flag without one; options that must be absent)
NAMED: dict[str, tuple[str, dict[str, str | None], tuple[str, ...]]] = {
    "4B": (
        "qwen3-reranker",
        {
            "--runner": "pooling",
            "--chat-template": template_path("qwen3_reranker.jinja"),
            "--max-model-len": "8192",  # 40960 supported, capped
            "--enable-prefix-caching": None,
        },
        ("--max-num-batched-tokens",),
    ),
    "bge": (
        "bge-reranker",
        # 8194 positions less RoBERTa's offset of 2; the tokenizer says 8192. Encoder-only: one batch holds a pair.
        {"--max-model-len": "8192", "--max-num-batched-tokens": "8192"},
        ("--runner", "--hf-overrides", "--chat-template", "--enable-prefix-caching", "--trust-remote-code"),
    ),
    "jina": (
        "jina-reranker-m0",
        {"--runner": "pooling", "--max-model-len": "8192"},
        # native: no overrides or template; the document comes first in its prompt: no shared prefix to cache
        ("--hf-overrides", "--chat-template", "--enable-prefix-caching"),
    ),
}


@pytest.mark.parametrize("model", sorted(NAMED))
def test_named_models_get_their_familys_flags(models: dict[str, ModelInfo], model: str) -> None:
    preset, expected, absent = NAMED[model]
    plan = plan_on(None, models[model])
    command = flags(plan)
    assert plan.preset == preset
    for option, value in expected.items():
        assert command.has(option) and command.value(option) == value, option
    for option in absent:
        assert not command.has(option), option
    if model == "4B":
        assert json.loads(command.value("--hf-overrides") or "") == QWEN_OVERRIDES
        assert any(r.startswith("preset: qwen3-reranker") and "Qwen3ForCausalLM" in r for r in plan.reasons)
    if model == "jina":
        assert any("CC-BY-NC-4.0" in r for r in plan.reasons)


def test_qwen3_reranker_4b_end_to_end(box: Box) -> None:
    """Through `reranker plan --json` and the text output: the preset, its flags and why."""
    box.gpus("1xT4")  # a GPU box: on this machine's CPU, 4B may not fit the memory that is free (plan/cpu_memory.py)
    assert box.model("4B") == "Qwen/Qwen3-Reranker-4B"
    plan = Plan.from_json(box.plan())
    command = flags(plan)
    assert plan.preset == "qwen3-reranker"
    assert json.loads(command.value("--hf-overrides") or "") == QWEN_OVERRIDES
    assert Path(command.value("--chat-template") or "").is_file()
    assert plan.truncation == TruncationPolicy(TruncationMode.SPLIT, 8192)  # recorded for the gateway
    box.capsys.readouterr()
    assert cli.main(["plan"]) == 0
    out = box.capsys.readouterr().out
    assert "preset       qwen3-reranker" in out
    assert "--hf-overrides" in out and "is_original_qwen3_reranker" in out
    assert "because the model id matches" in out
    assert "truncation: on" in out


def test_unknown_qwen3_reranker_offline_still_gets_its_preset_and_a_cap() -> None:
    unknown = ModelInfo(name="Qwen/Qwen3-Reranker-8B", source=ModelSource.UNKNOWN, note="not in the cache")
    plan = plan_on(None, unknown)  # no config.json at all
    assert plan.preset == "qwen3-reranker"
    assert json.loads(flags(plan).value("--hf-overrides") or "") == QWEN_OVERRIDES
    assert flags(plan).value("--max-model-len") == "8192"  # the family's 40960 context, capped


# --- choosing and overriding presets ----------------------------------------------------------------------


def test_reranker_preset_none_applies_no_family_flags(models: dict[str, ModelInfo]) -> None:
    plan = plan_on(None, models["4B"], RERANKER_PRESET="none")
    command = flags(plan)
    assert plan.preset is None
    assert not command.has("--hf-overrides", "--chat-template", "--runner")
    assert command.value("--max-model-len") == "8192"  # lengths still follow the model
    assert any("RERANKER_PRESET=none" in r for r in plan.reasons)


def test_reranker_preset_forces_one(tmp_path: Path) -> None:
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960}
    model = write_model(tmp_path, "my-finetune", config)
    assert plan_on(None, model).preset is None  # a Qwen3 causal LM by another name could be a chat model
    plan = plan_on(None, model, RERANKER_PRESET="qwen3-reranker")
    assert plan.preset == "qwen3-reranker"
    assert json.loads(flags(plan).value("--hf-overrides") or "") == QWEN_OVERRIDES
    assert any("forced by RERANKER_PRESET" in r for r in plan.reasons)


def test_unknown_preset_name_is_one_line_listing_the_choices(models: dict[str, ModelInfo]) -> None:
    with pytest.raises(PlanError) as caught:
        plan_on(None, models["bge"], RERANKER_PRESET="qwen4")
    message = str(caught.value)
    assert "RERANKER_PRESET='qwen4'" in message and "qwen3-reranker" in message and "none" in message
    assert "\n" not in message


def test_user_vllm_args_win_in_any_spelling(models: dict[str, ModelInfo]) -> None:
    args = "--max_model_len=32768 --chat-template /my/template.jinja --runner=pooling"
    plan = plan_on(None, models["4B"], VLLM_ARGS=args)
    argv = plan.vllm_command
    assert argv.count("--chat-template") == 1 and argv[argv.index("--chat-template") + 1] == "/my/template.jinja"
    assert "--max-model-len" not in argv and "--max_model_len=32768" in argv
    assert "--runner" not in argv  # theirs, as --runner=pooling
    assert "--hf-overrides" in argv  # what they did not set still comes from the preset
    assert any("--max-model-len: VLLM_ARGS sets it" in r for r in plan.reasons)
    assert plan.max_model_len == 32768  # the plan records the length vLLM will use: theirs


def test_encoder_batch_budget_follows_a_user_max_model_len(models: dict[str, ModelInfo]) -> None:
    plan = plan_on(None, models["bge"], VLLM_ARGS="--max-model-len 16384")  # more than our budget floor
    assert flags(plan).value("--max-num-batched-tokens") == "16384"


def test_a_model_of_unknown_length_is_left_to_vllm() -> None:
    unknown = ModelInfo(name="someone/reranker", source=ModelSource.UNKNOWN)
    plan = plan_on(None, unknown)
    assert not flags(plan).has("--max-model-len") and plan.max_model_len is None
    assert any("length limit is unknown" in r for r in plan.reasons)


def test_an_embedding_model_without_its_sentence_bert_config_keeps_vllms_length() -> None:
    hub_embedding = ModelInfo(
        name="BAAI/bge-small-en-v1.5",
        source=ModelSource.HUB,
        config={"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
    )
    plan = plan_on(None, hub_embedding)
    assert plan.preset == "embedding"
    assert not flags(plan).has("--max-model-len")
    assert any("sentence_bert_config.json may set a lower limit" in r for r in plan.reasons)


# --- every family, recognised from config.json as its checkpoint ships ----------------------------------

FAMILIES = [
    # (directory name, config.json, tokenizer_config.json, sentence_bert_config.json, preset, expected flags)
    (
        "Qwen3-Reranker-0.6B-seq-cls",
        {"architectures": ["Qwen3ForSequenceClassification"], "model_type": "qwen3", "max_position_embeddings": 40960},
        {"model_max_length": 131072},
        None,
        "qwen3-reranker-seq-cls",
        {
            "--chat-template": template_path("qwen3_reranker.jinja"),
            "--max-model-len": "8192",
            "--enable-prefix-caching": None,
        },
    ),
    (
        "mxbai-rerank-base-v2",
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768},
        {"model_max_length": 32768},
        None,
        "mxbai-rerank-base-v2",
        {
            "--runner": "pooling",
            "--chat-template": template_path("mxbai_rerank_v2.jinja"),
            "--max-model-len": "8192",
            "--pooler-config": '{"logit_mean":4.5}',  # mixedbread's sigmoid(x - 9 / 2) for base
        },
    ),
    (
        "mxbai-rerank-large-v2",
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768},
        {"model_max_length": 32768},
        None,
        "mxbai-rerank-large-v2",
        {"--pooler-config": '{"logit_mean":6.0}'},  # sigmoid(x - 12 / 2) for large
    ),
    (
        "zerank-2",
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960},
        {"model_max_length": 32768},
        None,
        "zerank-2",
        {
            "--runner": "pooling",
            "--chat-template": template_path("zerank.jinja"),
            "--pooler-config": '{"logit_sigma":5.0}',  # sigmoid(logit / 5), as the model card scores
            "--enable-prefix-caching": None,  # the query is the system turn: it repeats across documents
        },
    ),
    (
        "ctxl-rerank-v2-instruct-multilingual-2b",
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960},
        {"model_max_length": 32768},
        None,
        "ctxl-rerank-v2",
        {
            "--convert": "classify",
            "--chat-template": template_path("ctxl_rerank_v2.jinja"),
            "--pooler-config": '{"use_activation":false}',  # the raw logit, as Contextual AI scores
        },
    ),
    (
        "llama-nemotron-rerank-1b-v2",
        {
            "architectures": ["LlamaBidirectionalForSequenceClassification"],
            "model_type": "llama_bidirec",
            "max_position_embeddings": 131072,
        },
        {"model_max_length": 8192},
        None,
        "llama-nemotron-rerank",
        {
            "--trust-remote-code": None,  # its config class (llama_bidirec) is the model's own code
            "--chat-template": template_path("nemotron_rerank.jinja"),
            "--max-model-len": "8192",
            "--optimization-level": "0",  # bidirectional: encoder-only on this CPU
        },
    ),
    (
        "gte-reranker-modernbert-base",
        {
            "architectures": ["ModernBertForSequenceClassification"],
            "model_type": "modernbert",
            "max_position_embeddings": 8192,
        },
        {"model_max_length": 8192},
        None,
        "gte-reranker-modernbert",
        {"--max-model-len": "8192", "--max-num-batched-tokens": "8192"},
    ),
    (
        "bge-reranker-v2-gemma",
        {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "max_position_embeddings": 8192},
        {"model_max_length": 1000000000000000019884624838656},
        None,
        "bge-reranker-v2-gemma",
        {
            "--runner": "pooling",
            "--chat-template": template_path("bge_reranker_v2_gemma.jinja"),
            "--max-model-len": "8192",
        },
    ),
    (
        "gte-multilingual-reranker-base",
        {"architectures": ["NewForSequenceClassification"], "model_type": "new", "max_position_embeddings": 8192},
        {"model_max_length": 8192},
        None,
        "gte-multilingual-reranker",
        {"--trust-remote-code": None, "--max-model-len": "8192", "--max-num-batched-tokens": "8192"},
    ),
    (
        "bge-reranker-base",
        {
            "architectures": ["XLMRobertaForSequenceClassification"],
            "model_type": "xlm-roberta",
            "max_position_embeddings": 514,
        },
        {"model_max_length": 512},
        None,
        "bge-reranker",
        {"--max-model-len": "512", "--max-num-batched-tokens": "2048"},
    ),
    (
        "ms-marco-MiniLM-L-6-v2",
        {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "max_position_embeddings": 512},
        {"model_max_length": 512},
        None,
        "cross-encoder",
        {"--max-model-len": "512", "--max-num-batched-tokens": "2048"},
    ),
    (
        "all-MiniLM-L6-v2",
        {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
        {"model_max_length": 512},
        {"max_seq_length": 256},
        "embedding",
        {"--runner": "pooling", "--max-model-len": "256", "--max-num-batched-tokens": "2048"},
    ),
]


@pytest.mark.parametrize(
    ("name", "config", "tokenizer", "sentence_bert", "preset", "expected"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_flags_from_a_local_directory(
    tmp_path: Path,
    name: str,
    config: dict[str, Any],
    tokenizer: dict[str, Any],
    sentence_bert: dict[str, Any] | None,
    preset: str,
    expected: dict[str, str | None],
) -> None:
    plan = plan_on(None, write_model(tmp_path, name, config, tokenizer, sentence_bert))
    command = flags(plan)
    assert plan.preset == preset
    for option, value in expected.items():
        assert command.has(option) and command.value(option) == value, (option, command.options())
    hf = json.loads(command.value("--hf-overrides") or "{}")
    assert hf == HF_OVERRIDES.get(preset, {})  # the others vLLM detects itself


MXBAI = {
    "architectures": ["Qwen2ForSequenceClassification"],
    "classifier_from_token": ["0", "1"],
    "method": "from_2_way_softmax",
}
HF_OVERRIDES = {
    "mxbai-rerank-base-v2": MXBAI,
    "mxbai-rerank-large-v2": MXBAI,
    "zerank-2": {
        "architectures": ["Qwen3ForSequenceClassification"],
        "classifier_from_token": ["Yes"],
        "method": "no_post_processing",
    },
    "ctxl-rerank-v2": {"classifier_from_token": ["!"], "method": "no_post_processing"},
    "mxbai-rerank-v2": {
        "architectures": ["Qwen2ForSequenceClassification"],
        "classifier_from_token": ["0", "1"],
        "method": "from_2_way_softmax",
    },
    "bge-reranker-v2-gemma": {
        "architectures": ["GemmaForSequenceClassification"],
        "classifier_from_token": ["Yes"],
        "method": "no_post_processing",
    },
    "gte-multilingual-reranker": {"architectures": ["GteNewForSequenceClassification"]},
}


def test_a_seq_cls_conversion_under_an_original_name_follows_its_config(tmp_path: Path) -> None:
    config = {
        "architectures": ["Qwen3ForSequenceClassification"],
        "model_type": "qwen3",
        "max_position_embeddings": 40960,
    }
    plan = plan_on(None, write_model(tmp_path, "Qwen3-Reranker-4B", config))
    assert plan.preset == "qwen3-reranker-seq-cls"
    assert not flags(plan).has("--hf-overrides")  # already converted: overrides would load it wrongly


def test_a_local_directory_is_matched_by_its_own_name_not_the_path_above_it(tmp_path: Path) -> None:
    """A directory called bge-reranker-base inside /models/qwen3-reranker/ is a bge reranker."""
    config = {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta"}
    model = write_model(tmp_path / "qwen3-reranker", "bge-reranker-base", config)
    preset, how = match_preset(load_settings({"MODEL_NAME": model.name}), model)
    assert preset is not None and preset.name == "bge-reranker" and "bge-reranker" in how


def test_every_preset_template_is_shipped_and_names_are_unique() -> None:
    assert len({p.name for p in PRESETS}) == len(PRESETS)
    for preset in PRESETS:
        assert isinstance(preset.kind, PresetKind) and isinstance(preset.truncation, TruncationMode)
        if preset.template:
            assert Path(template_path(preset.template)).is_file(), preset.template
        if preset.template or preset.name == "jina-reranker-m0":
            assert preset.truncation is TruncationMode.SPLIT  # a composed prompt is cut before it is composed


# --- the Qwen3-Reranker template ----------------------------------------------------------------------------


def test_our_qwen3_template_renders_qwens_published_format_exactly() -> None:
    template = Path(template_path("qwen3_reranker.jinja")).read_text()
    expected = (
        QWEN_PREFIX
        + f"<Instruct>: {QWEN3_DEFAULT_INSTRUCTION}\n<Query>: What is tea?\n<Document>: Tea is a drink."
        + QWEN_SUFFIX
    )
    assert render(template, "What is tea?", "Tea is a drink.") == expected  # ends with "\n\n", the scored token
    custom = render(template, "q", "d", instruction="Find code")
    assert custom == QWEN_PREFIX + "<Instruct>: Find code\n<Query>: q\n<Document>: d" + QWEN_SUFFIX


def test_rerank_instruction_is_rendered_into_the_template_vllm_gets(models: dict[str, ModelInfo]) -> None:
    instruction = 'Given a "legal" question\\ find the {{ statute }} that applies: ünïcode'
    plan = plan_on(None, models["0.6B"], RERANK_INSTRUCTION=instruction)
    value = flags(plan).value("--chat-template") or ""
    assert value == qwen3_template(instruction)
    assert Path(template_path("qwen3_reranker.jinja")).read_text() != value
    assert (
        render(value, "q", "d") == QWEN_PREFIX + f"<Instruct>: {instruction}\n<Query>: q\n<Document>: d" + QWEN_SUFFIX
    )
    assert render(value, "q", "d", instruction="per request").startswith(QWEN_PREFIX + "<Instruct>: per request\n")
    assert any("RERANK_INSTRUCTION" in r for r in plan.reasons)
    assert plan.truncation is not None and plan.truncation.instruction_chars == len(instruction)


# --- default truncation (decided in the plan, applied by the gateway to request bodies) --------------------


def test_cross_encoders_and_embeddings_are_cut_to_the_model_limit(models: dict[str, ModelInfo]) -> None:
    policy = plan_on(None, models["bge"]).truncation
    assert policy == TruncationPolicy(TruncationMode.PAIR, 8192)
    body = {"model": "m", "query": "q", "documents": ["a", "b"]}
    assert apply_default_truncation("/v1/rerank", body, policy) == {**body, "truncate_prompt_tokens": -1}
    assert body == {"model": "m", "query": "q", "documents": ["a", "b"]}  # the caller's dict is not changed


def test_template_models_get_query_and_document_budgets_that_fit(models: dict[str, ModelInfo]) -> None:
    policy = plan_on(None, models["4B"], RERANK_INSTRUCTION="x" * 100).truncation
    assert policy == TruncationPolicy(TruncationMode.SPLIT, 8192, instruction_chars=100)
    out = apply_default_truncation("/v1/score", {"text_1": "q", "text_2": ["d"]}, policy)
    assert out["max_tokens_per_query"] == 2048
    assert out["max_tokens_per_query"] + out["max_tokens_per_doc"] + 256 + 100 == 8192
    longer = apply_default_truncation("/rerank", {"query": "q", "documents": ["d"], "instruction": "y" * 500}, policy)
    assert longer["max_tokens_per_doc"] == 8192 - 2048 - 256 - 500  # a request's own instruction is counted


@pytest.mark.parametrize("mode", [TruncationMode.PAIR, TruncationMode.SPLIT])
def test_a_request_that_chooses_truncate_prompt_tokens_is_left_alone(mode: TruncationMode) -> None:
    body = {"query": "q", "documents": ["d"], "truncate_prompt_tokens": 100}
    assert apply_default_truncation("/v2/rerank", body, TruncationPolicy(mode, 8192)) is body


def test_a_cohere_max_tokens_per_doc_narrows_the_budget_but_never_widens_it_past_the_model() -> None:
    """Cohere v2 clients send max_tokens_per_doc (default 4096): a long document is cut, never refused."""
    cohere = {"query": "q", "documents": ["d"], "max_tokens_per_doc": 4096}
    # A 512-token cross-encoder: vLLM refuses a per-document budget of the model's length or more, and
    # cutting the pair to the model cuts the document further anyway.
    pair = apply_default_truncation("/v2/rerank", cohere, TruncationPolicy(TruncationMode.PAIR, 512))
    assert pair == {"query": "q", "documents": ["d"], "truncate_prompt_tokens": -1}
    small = {**cohere, "max_tokens_per_doc": 100}  # a budget the model can hold is kept
    assert apply_default_truncation("/v2/rerank", small, TruncationPolicy(TruncationMode.PAIR, 512)) == {
        **small,
        "truncate_prompt_tokens": -1,
    }
    # A template model with 8192 tokens: the document budget is 5888, so the client's 4096 stands ...
    split = apply_default_truncation("/v2/rerank", cohere, TruncationPolicy(TruncationMode.SPLIT, 8192))
    assert (split["max_tokens_per_doc"], split["max_tokens_per_query"]) == (4096, 2048)
    # ... and with a 2048-token context, ours (1280) does.
    small = apply_default_truncation("/v2/rerank", cohere, TruncationPolicy(TruncationMode.SPLIT, 2048))
    assert small["max_tokens_per_doc"] == 2048 - 512 - 256


def test_v2_rerank_without_max_tokens_per_doc_gets_cohere_v2s_default_4096() -> None:
    bare = {"query": "q", "documents": ["d"]}
    long_pair = apply_default_truncation("/v2/rerank", bare, TruncationPolicy(TruncationMode.PAIR, 8192))
    assert long_pair == {**bare, "max_tokens_per_doc": 4096, "truncate_prompt_tokens": -1}
    short_pair = apply_default_truncation("/v2/rerank", bare, TruncationPolicy(TruncationMode.PAIR, 512))
    assert short_pair == {**bare, "truncate_prompt_tokens": -1}  # the model's limit is the smaller one
    split = apply_default_truncation("/v2/rerank", bare, TruncationPolicy(TruncationMode.SPLIT, 8192))
    assert split["max_tokens_per_doc"] == 4096
    jina = apply_default_truncation("/v1/rerank", bare, TruncationPolicy(TruncationMode.PAIR, 8192))
    assert "max_tokens_per_doc" not in jina  # Jina's API has no such default


def test_a_null_truncation_field_means_the_default_and_is_never_sent_to_vllm() -> None:
    """LangChain's CohereRerank sends "max_tokens_per_doc": null, which vLLM's integer field refuses (400)."""
    langchain = {"query": "q", "documents": ["d"], "max_tokens_per_doc": None, "top_n": 3}
    pair = apply_default_truncation("/v2/rerank", langchain, TruncationPolicy(TruncationMode.PAIR, 512))
    assert pair == {"query": "q", "documents": ["d"], "top_n": 3, "truncate_prompt_tokens": -1}
    split = apply_default_truncation("/v2/rerank", langchain, TruncationPolicy(TruncationMode.SPLIT, 8192))
    assert split["max_tokens_per_doc"] == 4096  # Cohere v2's default (below our budget of 8192 - 2048 - 256)
    assert apply_default_truncation("/v2/rerank", langchain, None) == {"query": "q", "documents": ["d"], "top_n": 3}
    assert langchain["max_tokens_per_doc"] is None  # the caller's dict is not changed


def test_other_routes_and_odd_bodies_pass_through() -> None:
    policy = TruncationPolicy(TruncationMode.PAIR, 512)
    for path, body in (
        ("/v1/embeddings", {"input": "x"}),
        ("/tokenize", {"prompt": "x"}),
        ("/v1/rerank", ["not", "a", "dict"]),
    ):
        assert apply_default_truncation(path, body, policy) is body
    assert apply_default_truncation("/v1/rerank/", {"query": "q"}, policy) == {
        "query": "q",
        "truncate_prompt_tokens": -1,
    }
    assert apply_default_truncation("/v1/rerank", {"query": "q"}, None) == {"query": "q"}


def test_truncate_false_restores_strict_behaviour(models: dict[str, ModelInfo]) -> None:
    plan = plan_on(None, models["bge"], TRUNCATE="false")
    assert plan.truncation is None
    assert any("TRUNCATE=false" in r for r in plan.reasons)


def test_a_user_chat_template_switches_to_budgets(models: dict[str, ModelInfo]) -> None:
    plan = plan_on(None, models["bge"], VLLM_ARGS="--chat-template /x.jinja")
    assert plan.score_template is True
    assert plan.truncation == TruncationPolicy(TruncationMode.SPLIT, 8192)


# --- families not served, and licences -----------------------------------------------------------------------

REFUSED = [
    # (directory name, config.json, what the refusal must offer instead)
    (
        "jina-reranker-v3",
        {"architectures": ["JinaForRanking"], "model_type": "qwen3", "max_position_embeddings": 131072},
        "jinaai/jina-reranker-m0",
    ),
    (
        "Qwen3-VL-Reranker-2B",
        {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl"},
        "Qwen/Qwen3-Reranker-0.6B",
    ),
]


@pytest.mark.parametrize(("name", "config", "alternative"), REFUSED, ids=[r[0] for r in REFUSED])
def test_unverified_families_are_refused_in_one_line_with_what_to_use_instead(
    box: Box, name: str, config: dict[str, Any], alternative: str
) -> None:
    model = write_model(box.tmp, name, config, {"model_max_length": 8192})
    box.env(MODEL_NAME=model.name)
    line = box.plan_error()  # exit 2, one line on stderr, no traceback
    assert "is not served" in line and alternative in line and "RERANKER_PRESET=none" in line
    forced = plan_on(None, model, RERANKER_PRESET="none")  # the way out the message names: no family flags
    assert forced.preset is None


def test_a_non_commercial_licence_is_stated_by_reranker_plan(box: Box) -> None:
    config = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960}
    model = write_model(box.tmp, "zerank-2", config, {"model_max_length": 32768})
    box.env(MODEL_NAME=model.name)
    data = box.plan()
    assert data["license"] == "CC-BY-NC-4.0" and data["non_commercial"] is True
    assert any(r.startswith("license: ") and "non-commercial use only" in r for r in data["reasons"])
    assert cli.main(["plan"]) == 0
    out = box.capsys.readouterr().out
    assert "license      CC-BY-NC-4.0  NON-COMMERCIAL USE ONLY" in out


def test_an_apache_family_says_its_licence_without_a_warning(tmp_path: Path) -> None:
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768}
    plan = plan_on(None, write_model(tmp_path, "mxbai-rerank-large-v2", config))
    assert plan.license == "Apache-2.0" and not plan.non_commercial


def test_a_dotted_pooler_config_key_in_vllm_args_takes_the_whole_option(tmp_path: Path) -> None:
    """vLLM rebuilds --pooler-config from dotted keys and the rebuilt one replaces ours: the plan says so."""
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "max_position_embeddings": 32768}
    plan = plan_on(
        None, write_model(tmp_path, "mxbai-rerank-base-v2", config), VLLM_ARGS="--pooler-config.logit_mean 3"
    )
    assert plan.vllm_command.count("--pooler-config") == 0 and "--pooler-config.logit_mean" in plan.vllm_command
    assert any(r.startswith("--pooler-config: VLLM_ARGS sets it") and "logit_mean" in r for r in plan.reasons)


# --- Sentence-Transformers v6 rerankers: their own recipe, read from their files -----------------------------

ST_TEMPLATE = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"


def write_st_v6(
    directory: Path, activation: str = "torch.nn.modules.activation.Sigmoid", two_tokens: bool = True
) -> None:
    """The files sentence-transformers 6 saves for a CrossEncoder on a causal LM (as CrossEncoder.save writes them)."""
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.base.modules.transformer.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_LogitScore",
                    "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore",
                },
            ]
        )
    )
    (directory / "1_LogitScore").mkdir()
    head = {"true_token_id": 7, "module_input_name": "causal_logits"} | ({"false_token_id": 8} if two_tokens else {})
    (directory / "1_LogitScore" / "config.json").write_text(json.dumps(head))
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "model_type": "CrossEncoder",
                "activation_fn": activation,
                "prompts": {"default": 'Judge "relevance".'},
                "default_prompt_name": "default",
            }
        )
    )
    (directory / "chat_template.jinja").write_text(ST_TEMPLATE)
    vocab = {"!": 0, "yes": 7, "no": 8}
    (directory / "tokenizer.json").write_text(
        json.dumps({"model": {"type": "BPE", "vocab": vocab}, "added_tokens": [{"id": 9, "content": "<|im_end|>"}]})
    )


QWEN3_CAUSAL = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960}


def test_a_sentence_transformers_v6_reranker_is_served_by_its_own_recipe(tmp_path: Path) -> None:
    """Named like Qwen3-Reranker, but its own files say how it is scored: they win over the family preset."""
    directory = tmp_path / "Qwen3-Reranker-0.6B-STv6"
    directory.mkdir()
    write_st_v6(directory)
    (directory / "config.json").write_text(json.dumps(QWEN3_CAUSAL))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32768}))
    model = inspect_local(str(directory))
    plan = plan_on(None, model)
    command = flags(plan)
    assert plan.preset == "sentence-transformers-v6"
    assert command.value("--runner") == "pooling" and command.value("--convert") == "classify"
    overrides = json.loads(command.value("--hf-overrides") or "")
    assert overrides == {"classifier_from_token": ["no", "yes"], "method": "from_2_way_softmax"}  # [false, true]
    template = command.value("--chat-template") or ""
    assert render(template, "q", "d") == 'system: Judge "relevance".\nquery: q\ndocument: d\n'  # the prompt as system
    assert render(template, "q", "d", instruction="Find code") == "system: Find code\nquery: q\ndocument: d\n"
    assert not command.has("--pooler-config")  # its Sigmoid is vLLM's default for one logit
    assert plan.truncation is not None and plan.truncation.mode is TruncationMode.SPLIT


def test_a_sentence_transformers_v6_identity_activation_and_one_token(tmp_path: Path) -> None:
    directory = tmp_path / "my-reranker"
    directory.mkdir()
    write_st_v6(directory, activation="torch.nn.modules.linear.Identity", two_tokens=False)
    (directory / "config.json").write_text(json.dumps(QWEN3_CAUSAL))
    command = flags(plan_on(None, inspect_local(str(directory))))
    assert json.loads(command.value("--hf-overrides") or "") == {
        "classifier_from_token": ["yes"],
        "method": "no_post_processing",
    }
    assert command.value("--pooler-config") == '{"use_activation":false}'


def test_a_sentence_transformers_v6_activation_vllm_lacks_is_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "my-reranker"
    directory.mkdir()
    write_st_v6(directory, activation="torch.nn.modules.activation.Tanh")
    (directory / "config.json").write_text(json.dumps(QWEN3_CAUSAL))
    with pytest.raises(PlanError, match="Tanh has no vLLM equivalent"):
        plan_on(None, inspect_local(str(directory)))


def test_a_sentence_transformers_v6_file_missing_plans_it_like_any_other_model(tmp_path: Path) -> None:
    directory = tmp_path / "my-reranker"
    directory.mkdir()
    write_st_v6(directory)
    (directory / "chat_template.jinja").unlink()
    (directory / "config.json").write_text(json.dumps(QWEN3_CAUSAL))
    model = inspect_local(str(directory))
    assert model.st_reranker is None and plan_on(None, model).preset is None
    with pytest.raises(PlanError, match="needs the model's Sentence-Transformers v6 files"):
        plan_on(None, model, RERANKER_PRESET="sentence-transformers-v6")


def test_a_hub_sentence_transformers_v6_reranker_is_planned_from_its_recipe_files(tmp_path: Path) -> None:
    """`reranker plan` on a hub model fetches the recipe files (not the weights) to choose the preset."""
    from support.fake_hub import FakeHub

    from reranker_template.facts.model import inspect_hub

    repo = tmp_path / "repo"
    repo.mkdir()
    write_st_v6(repo)
    (repo / "config.json").write_text(json.dumps(QWEN3_CAUSAL))
    (repo / "model.safetensors").write_bytes(b"\0" * 64)
    with FakeHub({"org/reranker-STv6": repo}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        model = inspect_hub("org/reranker-STv6", env=env)
        fetched = [r for r in hub.requests if "/resolve/" in r]
    assert any(r.endswith("1_LogitScore/config.json") for r in fetched), fetched
    assert not any(r.endswith(".safetensors") for r in fetched)  # no weights
    assert model.st_reranker is not None and model.st_reranker.true_token == "yes"
    assert plan_on(None, model).preset == "sentence-transformers-v6"
