"""Each rerank route answers in its owner's shape (reranker_template/rerank_api.py).

The rules as pure functions first, then through the gateway to the real bundled cross-encoder, as a
Jina or Cohere client sees them, errors included.
"""

from __future__ import annotations

import pytest
import requests
from support.stack_runner import RunningStack

from reranker_template.rerank_api import RerankApi, RerankAsked, api_for, shape_answer, shape_error

QUERY = "What is deep learning?"
DOCUMENTS = ["I like pizza", "Deep learning is a type of machine learning", "The weather is nice today"]
VLLM_ANSWER = {
    "id": "rerank-1",
    "model": "m",
    "usage": {"prompt_tokens": 30, "total_tokens": 30},
    "results": [
        {"index": 1, "document": {"text": DOCUMENTS[1], "multi_modal": None}, "relevance_score": 0.99},
        {"index": 0, "document": {"text": DOCUMENTS[0], "multi_modal": None}, "relevance_score": 0.01},
    ],
}


def test_routes_and_their_apis() -> None:
    assert api_for("/v1/rerank") is RerankApi.JINA and api_for("/rerank/") is RerankApi.JINA
    assert api_for("/v2/rerank") is RerankApi.COHERE_V2
    assert api_for("/v1/score") is None and api_for("/score") is None and api_for("/v1/models") is None


def test_jina_keeps_vllms_fields_and_returns_documents_as_text_unless_asked_not_to() -> None:
    shaped = shape_answer(RerankAsked.of(RerankApi.JINA, {"documents": DOCUMENTS}), VLLM_ANSWER)
    assert shaped == {
        **VLLM_ANSWER,
        "results": [
            {"index": 1, "relevance_score": 0.99, "document": {"text": DOCUMENTS[1]}},
            {"index": 0, "relevance_score": 0.01, "document": {"text": DOCUMENTS[0]}},
        ],
    }
    bare = shape_answer(RerankAsked.of(RerankApi.JINA, {"return_documents": False}), VLLM_ANSWER)
    assert bare["results"] == [{"index": 1, "relevance_score": 0.99}, {"index": 0, "relevance_score": 0.01}]


def test_cohere_v2_is_id_results_and_meta_with_billed_search_units() -> None:
    asked = RerankAsked.of(RerankApi.COHERE_V2, {"documents": ["d"] * 250, "return_documents": False})
    assert shape_answer(asked, VLLM_ANSWER) == {
        "id": "rerank-1",
        "results": [{"index": 1, "relevance_score": 0.99}, {"index": 0, "relevance_score": 0.01}],
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": 3},  # one per 100 documents
            "tokens": {"input_tokens": 30, "output_tokens": 0},
        },
    }
    # Without return_documents the documents stay: seed 001's Cohere example reads doc.document.text.
    default = shape_answer(RerankAsked.of(RerankApi.COHERE_V2, {"documents": DOCUMENTS}), VLLM_ANSWER)
    assert default["results"][0]["document"] == {"text": DOCUMENTS[1]}


def test_errors_take_the_apis_shape_and_odd_bodies_pass_through() -> None:
    vllm_error = {"error": {"message": "bad query", "type": "BadRequestError", "code": 400}}
    assert shape_error(RerankApi.JINA, vllm_error) == {"detail": "bad query"}
    assert shape_error(RerankApi.COHERE_V2, vllm_error) == {"message": "bad query"}
    not_ready = {**vllm_error, "status": "loading"}
    assert shape_error(RerankApi.COHERE_V2, not_ready) == {"message": "bad query", "status": "loading"}
    for odd in ("text", [1], {"detail": "already Jina's"}, {"error": "a string"}):
        assert shape_error(RerankApi.JINA, odd) == odd
        assert shape_answer(RerankAsked.of(RerankApi.JINA, None), odd) == odd


# --- through the gateway, to the real cross-encoder ----------------------------------------------------------


def post(stack: RunningStack, route: str, body: dict[str, object], token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token if token is not None else stack.token}"}
    return requests.post(stack.gateway_url + route, json=body, headers=headers, timeout=120)


@pytest.mark.vllm
def test_v1_rerank_honours_return_documents_and_top_n(cross_encoder_stack: RunningStack) -> None:
    body = {"model": cross_encoder_stack.served_name, "query": QUERY, "documents": DOCUMENTS, "top_n": 2}
    answer = post(cross_encoder_stack, "/v1/rerank", body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert set(data) == {"id", "model", "usage", "results"} and data["usage"]["total_tokens"] > 0
    assert len(data["results"]) == 2 and data["results"][0]["index"] == 1  # top_n, best first
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in data["results"])  # no multi_modal: null
    bare = post(cross_encoder_stack, "/v1/rerank", {**body, "return_documents": False}).json()
    assert all(set(r) == {"index", "relevance_score"} for r in bare["results"])


@pytest.mark.vllm
def test_v2_rerank_is_cohere_v2_and_cuts_a_long_document_instead_of_failing(cross_encoder_stack: RunningStack) -> None:
    long_document = "deep learning " * 3000  # far past the model's 512 tokens, within Cohere's 4096 per document
    documents = [*DOCUMENTS, long_document]
    body = {
        "model": cross_encoder_stack.served_name,
        "query": QUERY,
        "documents": documents,
        "max_tokens_per_doc": 4096,
    }
    answer = post(cross_encoder_stack, "/v2/rerank", body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert set(data) == {"id", "results", "meta"}
    assert data["meta"]["billed_units"] == {"search_units": 1} and data["meta"]["tokens"]["input_tokens"] > 0
    assert {r["index"] for r in data["results"]} == {0, 1, 2, 3}
    bare = post(cross_encoder_stack, "/v2/rerank", {**body, "return_documents": False}).json()
    assert all(set(r) == {"index", "relevance_score"} for r in bare["results"])


@pytest.mark.vllm
def test_errors_come_in_each_apis_shape_with_vllms_status(cross_encoder_stack: RunningStack) -> None:
    no_query = {"model": cross_encoder_stack.served_name, "documents": DOCUMENTS}
    jina, cohere, score = (
        post(cross_encoder_stack, route, no_query) for route in ("/v1/rerank", "/v2/rerank", "/v1/score")
    )
    assert jina.status_code == cohere.status_code == 400
    assert set(jina.json()) == {"detail"} and set(cohere.json()) == {"message"}
    assert jina.json()["detail"] == cohere.json()["message"] and "query" in cohere.json()["message"]
    assert score.status_code == 400 and set(score.json()) == {"error"}  # vLLM's own shape on its own routes
    refused = post(cross_encoder_stack, "/v2/rerank", {**no_query, "query": QUERY}, token="wrong")
    assert refused.status_code == 401 and set(refused.json()) == {"message"}
