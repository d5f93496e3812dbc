"""Scores through our stack (real CPU vLLM behind the gateway) equal a reference computed with transformers.

Three kinds of scorer, each checked against how its authors compute a score:
- a cross-encoder (BertForSequenceClassification, random encoder): sigmoid of its one logit;
- a Qwen3-Reranker in its original causal-LM format, served with the qwen3-reranker preset: Qwen's published
  method (their prompt, then P("yes") from a softmax over the "no"/"yes" logits of the last token);
- all-MiniLM-L6-v2, an embedding model: cosine similarity of mean-pooled embeddings.
And the boot-time known-answer check: it fails for the Qwen3 model served without its score template (the
mistake users make) and passes with it.

Models are served in float32 (VLLM_ARGS wins over the CPU half-precision default), so 1e-3 measures correctness,
not rounding.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.scores import TOLERANCE, CausalLM, assert_close, served_scores
from support.stack_runner import RunningStack, http_get, http_post_json, minilm_dir, start_stack
from support.tiny_models import WORDS, make_decisive_bert_cross_encoder, make_qwen3_reranker

from reranker_template.plan.contract import TruncationMode, read_plan
from reranker_template.plan.presets import QWEN3_DEFAULT_INSTRUCTION
from reranker_template.plan.truncation import apply_default_truncation
from reranker_template.serve.quality import TRIPLES

pytestmark = pytest.mark.vllm

# -O0: no torch.compile warm-up for these tiny test-made models (about 90 s saved per start on 2 cores);
# the shared MiniLM stack runs the plan exactly as users get it.
FLOAT32 = {"VLLM_ARGS": "--dtype float32 -O0"}
QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN_OVERRIDES = {
    "architectures": ["Qwen3ForSequenceClassification"],
    "classifier_from_token": ["no", "yes"],
    "is_original_qwen3_reranker": True,
}

QUERY = "what are the health benefits of green tea?"
DOCUMENTS = [
    "green tea contains antioxidants that protect cells and the brain",
    "basketball is a popular sport in the united states",
    "drinking green tea is popular in many a country",
    "how to bake bread with flour and water in a hot oven",
    "paris is the capital and largest city of france",
    "deep learning is a machine learning question",
]
CORPUS = [text for triple in TRIPLES for text in triple[1:]] + [" ".join(WORDS), QUERY, *DOCUMENTS]


def wait_for_quality(stack: RunningStack, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = json.loads(http_get(stack.gateway_url + "/health")[1])
        if health.get("quality_check") not in (None, "pending") or time.monotonic() > deadline:
            return health
        time.sleep(0.5)


# --- a cross-encoder ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_decisive_bert_cross_encoder(
        tmp_path_factory.mktemp("models") / "tiny-cross-encoder", [(QUERY, d) for d in DOCUMENTS], seed=3
    )


@pytest.fixture(scope="module")
def bert_stack(
    tmp_path_factory: pytest.TempPathFactory, bert_model: Path, vllm_cache_root: Path
) -> Iterator[RunningStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("bert"),
        str(bert_model),
        served_name="tiny-bert",
        extra_env={**FLOAT32, "QUALITY_CHECK": "false"},
        cache_root=vllm_cache_root,
    )
    yield stack
    stack.stop()


def bert_reference(model_dir: Path, query: str, documents: list[str], max_length: int | None = None) -> list[float]:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    scores = []
    for document in documents:
        inputs = tokenizer(
            query, document, return_tensors="pt", truncation=max_length is not None, max_length=max_length
        )
        with torch.no_grad():
            scores.append(torch.sigmoid(model(**inputs).logits[0, 0]).item())
    return scores


def test_cross_encoder_scores_equal_sigmoid_of_the_logit(bert_stack: RunningStack, bert_model: Path) -> None:
    assert_close(served_scores(bert_stack, QUERY, DOCUMENTS), bert_reference(bert_model, QUERY, DOCUMENTS))


def test_cross_encoder_long_document_is_truncated_not_refused(bert_stack: RunningStack, bert_model: Path) -> None:
    """The default policy (what the gateway adds) turns vLLM's 400 into the score of the pair cut to fit."""
    long_document = " ".join(["green tea is a popular drink"] * 200)  # about 1200 tokens, the model takes 512
    body = {"model": bert_stack.served_name, "text_1": QUERY, "text_2": [long_document, DOCUMENTS[1]]}
    status, _ = http_post_json(bert_stack.vllm_url + "/v1/score", body, token=None)
    assert status == 400  # vLLM alone: one long document fails the whole call
    policy = read_plan(bert_stack.state_dir / "plan.json").truncation
    assert policy is not None and policy.mode is TruncationMode.PAIR
    truncated = apply_default_truncation("/v1/score", body, policy)  # what the gateway sends
    status, reply = http_post_json(bert_stack.vllm_url + "/v1/score", truncated, token=None)
    assert status == 200, reply
    served = [item["score"] for item in sorted(reply["data"], key=lambda item: item["index"])]
    reference = bert_reference(bert_model, QUERY, [long_document, DOCUMENTS[1]], max_length=512)  # longest_first
    assert max(abs(a - b) for a, b in zip(served, reference, strict=True)) < TOLERANCE, (served, reference)
    # Through the gateway, which adds the policy itself: the same scores, and rerank works too.
    status, through = http_post_json(bert_stack.gateway_url + "/v1/score", body)
    assert status == 200, through
    through_scores = [item["score"] for item in sorted(through["data"], key=lambda item: item["index"])]
    assert max(abs(a - b) for a, b in zip(through_scores, served, strict=True)) < TOLERANCE, (through_scores, served)
    status, ranked = http_post_json(
        bert_stack.gateway_url + "/v1/rerank",
        {"model": bert_stack.served_name, "query": QUERY, "documents": [long_document, DOCUMENTS[1]]},
    )
    assert status == 200 and len(ranked["results"]) == 2, ranked


# --- a Qwen3-Reranker in its original format ----------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Named like the real checkpoints, so the preset is chosen the way a user's would be.
    return make_qwen3_reranker(tmp_path_factory.mktemp("models") / "tiny-Qwen3-Reranker", CORPUS)


@pytest.fixture(scope="module")
def qwen_stack(
    tmp_path_factory: pytest.TempPathFactory, qwen_model: Path, vllm_cache_root: Path
) -> Iterator[RunningStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("qwen"),
        str(qwen_model),
        served_name="tiny-qwen3-reranker",
        extra_env=FLOAT32,
        cache_root=vllm_cache_root,
    )
    yield stack
    stack.stop()


class QwenReference:
    """Qwen's published scoring method (Qwen3-Reranker model card), run with transformers."""

    def __init__(self, model_dir: Path) -> None:
        self.lm = CausalLM(model_dir)
        self.yes, self.no = self.lm.token("yes"), self.lm.token("no")

    def scores(self, query: str, documents: list[str], instruction: str = QWEN3_DEFAULT_INSTRUCTION) -> list[float]:
        prefix, suffix = self.lm.ids(QWEN_PREFIX), self.lm.ids(QWEN_SUFFIX)
        torch = self.lm.torch
        out = []
        for document in documents:
            pair = self.lm.ids(f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}")
            logits = self.lm.last_logits(prefix + pair + suffix)
            both = torch.stack([logits[self.no], logits[self.yes]])
            out.append(torch.log_softmax(both, dim=0)[1].exp().item())
        return out


@pytest.fixture(scope="module")
def qwen_reference(qwen_model: Path) -> QwenReference:
    return QwenReference(qwen_model)


def test_qwen3_reranker_was_served_with_its_preset(qwen_stack: RunningStack) -> None:
    plan = read_plan(qwen_stack.state_dir / "plan.json")
    assert plan.preset == "qwen3-reranker" and plan.score_template
    argv = plan.vllm_command
    assert json.loads(argv[argv.index("--hf-overrides") + 1]) == QWEN_OVERRIDES
    assert argv[argv.index("--chat-template") + 1].endswith("qwen3_reranker.jinja")


def test_qwen3_reranker_scores_equal_qwens_method(qwen_stack: RunningStack, qwen_reference: QwenReference) -> None:
    assert_close(served_scores(qwen_stack, QUERY, DOCUMENTS), qwen_reference.scores(QUERY, DOCUMENTS))


def test_qwen3_reranker_rerank_orders_as_the_reference(qwen_stack: RunningStack, qwen_reference: QwenReference) -> None:
    status, body = http_post_json(
        qwen_stack.gateway_url + "/v1/rerank",
        {"model": qwen_stack.served_name, "query": QUERY, "documents": DOCUMENTS},
        token=qwen_stack.token,
    )
    assert status == 200, body
    reference = qwen_reference.scores(QUERY, DOCUMENTS)
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCUMENTS)), key=lambda i: -reference[i])
    for result in body["results"]:
        assert abs(result["relevance_score"] - reference[result["index"]]) < TOLERANCE


def test_qwen3_reranker_request_instruction(qwen_stack: RunningStack, qwen_reference: QwenReference) -> None:
    instruction = "Given a question about tea, find the passage that answers it"
    assert_close(
        served_scores(qwen_stack, QUERY, DOCUMENTS, instruction=instruction),
        qwen_reference.scores(QUERY, DOCUMENTS, instruction),
    )


def test_qwen3_reranker_long_document_is_truncated_before_the_template(
    qwen_stack: RunningStack, qwen_reference: QwenReference
) -> None:
    """Budgets cut the document, not the template's tail: the score is that of the document's first tokens."""
    plan = read_plan(qwen_stack.state_dir / "plan.json")
    assert plan.truncation is not None and plan.truncation.mode is TruncationMode.SPLIT
    assert plan.max_model_len is not None and plan.truncation.max_model_len == plan.max_model_len
    long_document = " ".join(["green tea contains antioxidants"] * 400)  # 1600 words, more than max_len
    body = {"model": qwen_stack.served_name, "text_1": QUERY, "text_2": [long_document]}
    assert http_post_json(qwen_stack.vllm_url + "/v1/score", body, token=None)[0] == 400
    truncated = apply_default_truncation("/v1/score", body, plan.truncation)  # what the gateway sends
    status, reply = http_post_json(qwen_stack.vllm_url + "/v1/score", truncated, token=None)
    assert status == 200, reply
    kept = " ".join(long_document.split()[: truncated["max_tokens_per_doc"]])  # one token per word here
    assert abs(reply["data"][0]["score"] - qwen_reference.scores(QUERY, [kept])[0]) < TOLERANCE
    status, through = http_post_json(qwen_stack.gateway_url + "/v1/score", body)  # the gateway adds the budgets
    assert status == 200 and abs(through["data"][0]["score"] - reply["data"][0]["score"]) < TOLERANCE, through


def test_quality_check_passes_with_the_template(qwen_stack: RunningStack) -> None:
    health = wait_for_quality(qwen_stack)
    assert health["quality_check"] == "passed", health


def test_quality_check_fails_without_the_template(
    tmp_path_factory: pytest.TempPathFactory, qwen_model: Path, vllm_cache_root: Path
) -> None:
    """The classic mistake: overrides but no score template. vLLM answers 200; our check says it is wrong."""
    args = "--dtype float32 -O0 --runner pooling --hf-overrides " + shlex.quote(json.dumps(QWEN_OVERRIDES))
    stack = start_stack(
        tmp_path_factory.mktemp("qwen-no-template"),
        str(qwen_model),
        served_name="no-template",
        extra_env={"RERANKER_PRESET": "none", "VLLM_ARGS": args},
        cache_root=vllm_cache_root,
    )
    try:
        plan = read_plan(stack.state_dir / "plan.json")
        assert not plan.score_template and "--chat-template" not in plan.vllm_command
        assert len(served_scores(stack, QUERY, DOCUMENTS)) == len(DOCUMENTS)  # it does answer
        health = wait_for_quality(stack)
        assert health["quality_check"] == "failed", health
        assert health["status"] == "ready"  # a warning, not an outage
        assert "score template" in stack.log_text() and "WARNING" in stack.log_text()
    finally:
        stack.stop()


# --- an embedding model -------------------------------------------------------------------------------------


def minilm_reference(query: str, documents: list[str]) -> list[float]:
    """sentence-transformers' method: cosine of the mean-pooled token embeddings, in float32."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir(), dtype=torch.float32).eval()

    def embed(text: str) -> Any:
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=256)
        with torch.no_grad():
            hidden = model(**inputs).last_hidden_state[0]
        mask = inputs["attention_mask"][0].unsqueeze(-1).float()
        return (hidden * mask).sum(0) / mask.sum()

    query_embedding = embed(query)
    return [torch.nn.functional.cosine_similarity(query_embedding, embed(d), dim=0).item() for d in documents]


EMBEDDING_DOCUMENTS = [
    "Green tea contains antioxidants.",
    "Basketball is a popular sport.",
    "Drinking tea every day is healthy.",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def minilm_float32_stack(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[RunningStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("minilm-f32"),
        str(minilm_dir()),
        served_name="minilm-f32",
        extra_env={**FLOAT32, "QUALITY_CHECK": "false"},
        cache_root=vllm_cache_root,
    )
    yield stack
    stack.stop()


def test_embedding_model_scores_are_cosine_of_mean_pooled_embeddings(minilm_float32_stack: RunningStack) -> None:
    served = served_scores(minilm_float32_stack, QUERY, EMBEDDING_DOCUMENTS)
    reference = minilm_reference(QUERY, EMBEDDING_DOCUMENTS)
    assert_close(served, reference)


def test_embedding_model_in_half_precision_keeps_the_ranking(minilm_stack: RunningStack) -> None:
    """The shared MiniLM stack runs as users get it on this CPU (float16 or bfloat16): close, same order."""
    served = served_scores(minilm_stack, QUERY, EMBEDDING_DOCUMENTS)
    reference = minilm_reference(QUERY, EMBEDDING_DOCUMENTS)
    assert max(abs(a - b) for a, b in zip(served, reference, strict=True)) < 2e-2, (served, reference)
    assert sorted(range(4), key=lambda i: -served[i])[:2] == sorted(range(4), key=lambda i: -reference[i])[:2]
