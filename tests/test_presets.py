"""Model presets: `reranker plan` gives each model family the flags its authors document, and says why.

No vLLM and no network: hub models come from a Hugging Face cache built in tmp from tests/fixtures/models
(real configs, sparse weights; the parallel tests' helpers), other families from config.json files written
here as their checkpoints ship them. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_parallel import Box, options
from transformers.utils.chat_template_utils import _compile_jinja_template

from reranker_template import cli
from reranker_template.plan.contract import Plan, TruncationMode, TruncationPolicy
from reranker_template.plan.presets import PRESETS, QWEN3_DEFAULT_INSTRUCTION, qwen3_template, template_path
from reranker_template.plan.truncation import apply_default_truncation

QWEN_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}
# Qwen's published prompt format (Qwen3-Reranker model card), the reference for our template.
QWEN_PREFIX = '<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Box:
    return Box(tmp_path, monkeypatch, capsys)


def write_model(
    base: Path, name: str, config: dict, tokenizer_config: dict | None = None, sentence_bert: dict | None = None
) -> str:
    """A local model directory with the metadata files its checkpoint ships (no weights needed to plan)."""
    directory = base / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if sentence_bert is not None:
        (directory / "sentence_bert_config.json").write_text(json.dumps(sentence_bert))
    return str(directory)


def render(template: str, query: str, document: str, **kwargs: str) -> str:
    """Render a score template the way vLLM does (transformers' Jinja environment, query/document roles)."""
    return _compile_jinja_template(template).render(
        messages=[{"role": "query", "content": query}, {"role": "document", "content": document}], **kwargs
    )


# --- the three models the issue names, from the (fake, offline) Hugging Face cache -------------------------


def test_qwen3_reranker_4b_gets_overrides_template_and_capped_length(box: Box) -> None:
    assert box.model("4B") == "Qwen/Qwen3-Reranker-4B"
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] == "qwen3-reranker"
    assert flags["--runner"] == "pooling"
    assert json.loads(flags["--hf-overrides"]) == QWEN_OVERRIDES
    assert (
        flags["--chat-template"] == template_path("qwen3_reranker.jinja") and Path(flags["--chat-template"]).is_file()
    )
    assert flags["--max-model-len"] == "8192"  # 40960 supported, capped
    assert "--enable-prefix-caching" in flags
    assert "--max-num-batched-tokens" not in flags
    assert any(r.startswith("preset: qwen3-reranker") and "Qwen3ForCausalLM" in r for r in plan["reasons"])


def test_bge_reranker_v2_m3_gets_nothing_but_lengths(box: Box) -> None:
    box.model("bge")
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] == "bge-reranker"
    for absent in ("--runner", "--hf-overrides", "--chat-template", "--enable-prefix-caching", "--trust-remote-code"):
        assert absent not in flags
    assert flags["--max-model-len"] == "8192"  # 8194 positions less RoBERTa's offset of 2; the tokenizer says 8192
    assert int(flags["--max-num-batched-tokens"]) >= 8192  # encoder-only: one batch holds a whole pair


def test_jina_reranker_m0_is_native_and_its_license_is_named(box: Box) -> None:
    box.model("jina")
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] == "jina-reranker-m0"
    assert flags["--runner"] == "pooling"
    assert "--hf-overrides" not in flags and "--chat-template" not in flags
    assert flags["--max-model-len"] == "8192"
    assert "--enable-prefix-caching" not in flags  # the document comes first in its prompt: no shared prefix
    assert any("CC-BY-NC-4.0" in r for r in plan["reasons"])


def test_plan_text_output_shows_preset_and_reasons(box: Box) -> None:
    box.model("4B")
    box.capsys.readouterr()
    assert cli.main(["plan"]) == 0
    out = box.capsys.readouterr().out
    assert "preset       qwen3-reranker" in out
    assert "--hf-overrides" in out and "is_original_qwen3_reranker" in out
    assert "because the model id matches" in out
    assert "truncation: on" in out


def test_unknown_qwen3_reranker_offline_still_gets_its_preset_and_a_cap(box: Box) -> None:
    box.env(MODEL_NAME="Qwen/Qwen3-Reranker-8B")  # not in the cache, offline: no config.json at all
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] == "qwen3-reranker"
    assert json.loads(flags["--hf-overrides"]) == QWEN_OVERRIDES
    assert flags["--max-model-len"] == "8192"  # the family's 40960 context, capped


# --- choosing and overriding presets ----------------------------------------------------------------------


def test_reranker_preset_none_applies_no_family_flags(box: Box) -> None:
    box.model("4B")
    box.env(RERANKER_PRESET="none")
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] is None
    assert "--hf-overrides" not in flags and "--chat-template" not in flags and "--runner" not in flags
    assert flags["--max-model-len"] == "8192"  # lengths still follow the model
    assert any("RERANKER_PRESET=none" in r for r in plan["reasons"])


def test_reranker_preset_forces_one(box: Box) -> None:
    model = write_model(
        box.tmp,
        "my-finetune",
        {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "max_position_embeddings": 40960},
    )
    box.env(MODEL_NAME=model)
    assert box.plan()["preset"] is None  # a Qwen3 causal LM by another name could be a chat model
    box.env(RERANKER_PRESET="qwen3-reranker")
    plan = box.plan()
    assert plan["preset"] == "qwen3-reranker"
    assert json.loads(options(plan)["--hf-overrides"]) == QWEN_OVERRIDES
    assert any("forced by RERANKER_PRESET" in r for r in plan["reasons"])


def test_unknown_preset_name_is_one_line_listing_the_choices(box: Box) -> None:
    box.model("bge")
    box.env(RERANKER_PRESET="qwen4")
    message = box.plan_error()
    assert "RERANKER_PRESET='qwen4'" in message and "qwen3-reranker" in message and "none" in message


def test_user_vllm_args_win_in_any_spelling(box: Box) -> None:
    box.model("4B")
    box.env(VLLM_ARGS="--max_model_len=32768 --chat-template /my/template.jinja --runner=pooling")
    plan = box.plan()
    argv = plan["vllm_command"]
    assert argv.count("--chat-template") == 1 and argv[argv.index("--chat-template") + 1] == "/my/template.jinja"
    assert "--max-model-len" not in argv and "--max_model_len=32768" in argv
    assert "--runner" not in argv  # theirs, as --runner=pooling
    assert "--hf-overrides" in argv  # what they did not set still comes from the preset
    assert any("--max-model-len: VLLM_ARGS sets it" in r for r in plan["reasons"])


def test_encoder_batch_budget_follows_a_user_max_model_len(box: Box) -> None:
    box.model("bge")
    box.env(VLLM_ARGS="--max-model-len 16384")  # more than our budget floor
    flags = options(box.plan())
    assert flags["--max-num-batched-tokens"] == "16384"


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
        "mxbai-rerank-v2",
        {"--runner": "pooling", "--chat-template": template_path("mxbai_rerank_v2.jinja"), "--max-model-len": "8192"},
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
        {"--max-model-len": "512", "--max-num-batched-tokens": "8192"},
    ),
    (
        "ms-marco-MiniLM-L-6-v2",
        {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "max_position_embeddings": 512},
        {"model_max_length": 512},
        None,
        "cross-encoder",
        {"--max-model-len": "512", "--max-num-batched-tokens": "8192"},
    ),
    (
        "all-MiniLM-L6-v2",
        {"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512},
        {"model_max_length": 512},
        {"max_seq_length": 256},
        "embedding",
        {"--runner": "pooling", "--max-model-len": "256", "--max-num-batched-tokens": "8192"},
    ),
]


@pytest.mark.parametrize(
    ("name", "config", "tokenizer", "sentence_bert", "preset", "expected"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_family_flags_from_a_local_directory(
    box: Box, name: str, config: dict, tokenizer: dict, sentence_bert: dict | None, preset: str, expected: dict
) -> None:
    box.env(MODEL_NAME=write_model(box.tmp / "models", name, config, tokenizer, sentence_bert))
    plan = box.plan()
    flags = options(plan)
    assert plan["preset"] == preset
    for option, value in expected.items():
        assert option in flags and flags[option] == value, (option, flags)
    hf = json.loads(flags.get("--hf-overrides") or "{}")
    if preset == "mxbai-rerank-v2":
        assert hf == {
            "architectures": ["Qwen2ForSequenceClassification"],
            "classifier_from_token": ["0", "1"],
            "method": "from_2_way_softmax",
        }
    if preset == "bge-reranker-v2-gemma":
        assert hf == {
            "architectures": ["GemmaForSequenceClassification"],
            "classifier_from_token": ["Yes"],
            "method": "no_post_processing",
        }
    if preset == "gte-multilingual-reranker":
        assert hf == {"architectures": ["GteNewForSequenceClassification"]}
    if preset in ("qwen3-reranker-seq-cls", "bge-reranker", "cross-encoder", "embedding"):
        assert hf == {}  # vLLM detects these itself


def test_a_seq_cls_conversion_under_an_original_name_follows_its_config(box: Box) -> None:
    box.env(
        MODEL_NAME=write_model(
            box.tmp,
            "Qwen3-Reranker-4B",
            {
                "architectures": ["Qwen3ForSequenceClassification"],
                "model_type": "qwen3",
                "max_position_embeddings": 40960,
            },
        )
    )
    plan = box.plan()
    assert plan["preset"] == "qwen3-reranker-seq-cls"
    assert "--hf-overrides" not in options(plan)  # already converted: overrides would load it wrongly


def test_every_preset_template_is_shipped_and_names_are_unique() -> None:
    assert len({p.name for p in PRESETS}) == len(PRESETS)
    for preset in PRESETS:
        if preset.template:
            assert Path(template_path(preset.template)).is_file(), preset.template


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


def test_rerank_instruction_is_rendered_into_the_template_vllm_gets(box: Box) -> None:
    box.model("0.6B")
    instruction = 'Given a "legal" question\\ find the {{ statute }} that applies: ünïcode'
    box.env(RERANK_INSTRUCTION=instruction)
    plan = box.plan()
    value = options(plan)["--chat-template"]
    assert value == qwen3_template(instruction)
    assert not Path(template_path("qwen3_reranker.jinja")).read_text() == value
    assert (
        render(value, "q", "d") == QWEN_PREFIX + f"<Instruct>: {instruction}\n<Query>: q\n<Document>: d" + QWEN_SUFFIX
    )
    assert render(value, "q", "d", instruction="per request").startswith(QWEN_PREFIX + "<Instruct>: per request\n")
    assert any("RERANK_INSTRUCTION" in r for r in plan["reasons"])


# --- default truncation (the gateway applies it to request bodies) ----------------------------------------


def _truncation_for(box: Box, model: str, **env: str) -> TruncationPolicy | None:
    """The policy `reranker plan --json` records in the plan (the gateway reads it from plan.json)."""
    box.model(model)
    box.env(**env)
    plan = Plan.from_json(box.plan())
    return plan.truncation


def test_cross_encoders_and_embeddings_are_cut_to_the_model_limit(box: Box) -> None:
    policy = _truncation_for(box, "bge")
    assert policy is not None and policy.mode == "pair"
    body = {"model": "m", "query": "q", "documents": ["a", "b"]}
    assert apply_default_truncation("/v1/rerank", body, policy) == {**body, "truncate_prompt_tokens": -1}
    assert body == {"model": "m", "query": "q", "documents": ["a", "b"]}  # the caller's dict is not changed


def test_template_models_get_query_and_document_budgets_that_fit(box: Box) -> None:
    policy = _truncation_for(box, "4B", RERANK_INSTRUCTION="x" * 100)
    assert policy is not None and policy.mode == "split" and policy.max_model_len == 8192
    out = apply_default_truncation("/v1/score", {"text_1": "q", "text_2": ["d"]}, policy)
    assert out["max_tokens_per_query"] == 2048
    assert out["max_tokens_per_query"] + out["max_tokens_per_doc"] + 256 + 100 == 8192
    longer = apply_default_truncation("/rerank", {"query": "q", "documents": ["d"], "instruction": "y" * 500}, policy)
    assert longer["max_tokens_per_doc"] == 8192 - 2048 - 256 - 500  # a request's own instruction is counted


@pytest.mark.parametrize("field", ["truncate_prompt_tokens", "max_tokens_per_query", "max_tokens_per_doc"])
def test_a_request_that_chooses_its_own_truncation_is_left_alone(field: str) -> None:
    policy = TruncationPolicy(TruncationMode.SPLIT, 8192)
    body = {"query": "q", "documents": ["d"], field: 100}
    assert apply_default_truncation("/v2/rerank", body, policy) is body


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


def test_truncate_false_restores_strict_behaviour(box: Box) -> None:
    assert _truncation_for(box, "bge", TRUNCATE="false") is None
    assert any("TRUNCATE=false" in r for r in box.plan()["reasons"])


def test_a_user_chat_template_switches_to_budgets(box: Box) -> None:
    policy = _truncation_for(box, "bge", VLLM_ARGS="--chat-template /x.jinja")
    assert policy is not None and policy.mode == "split" and policy.max_model_len == 8192
