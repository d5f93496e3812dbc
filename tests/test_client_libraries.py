"""The client libraries people point at a rerank server, against the real stack (the bundled cross-encoder
behind the gateway), each at today's pin and at its newest release (tests/support/client_envs.py).

Each runs the code README.md shows for it, with our base URL and token, in its own environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.client_envs import LIBRARIES, ClientEnv, versions_to_test
from support.stack_runner import RunningStack

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1800)]

QUERY = "What is deep learning?"
DOCUMENTS = ["I like pizza", "Deep learning is a type of machine learning", "The weather is nice today"]
BEST = 1

COHERE = f"""
import json, sys
import cohere
url, token, model = sys.argv[1:4]
documents = {DOCUMENTS!r}
out = {{}}
co = cohere.ClientV2(token, base_url=url)
ranked = co.rerank(model=model, query={QUERY!r}, documents=documents, top_n=2)
out["v2"] = [[r.index, r.relevance_score] for r in ranked.results]
if hasattr(cohere, "Client"):  # the v1 client: /v1/rerank, documents only when asked for
    v1 = cohere.Client(token, base_url=url).rerank(model=model, query={QUERY!r}, documents=documents,
                                                   return_documents=True)
    out["v1_documents"] = [r.document.text for r in v1.results]
try:
    cohere.ClientV2("not-the-token", base_url=url).rerank(model=model, query="q", documents=["d"])
except Exception as exc:
    out["refused"] = [getattr(exc, "status_code", None), getattr(exc, "body", None)]
print(json.dumps(out))
"""

LANGCHAIN = f"""
import json, sys
from langchain_cohere import CohereRerank
from langchain_core.documents import Document
url, token, model = sys.argv[1:4]
reranker = CohereRerank(model=model, cohere_api_key=token, base_url=url, top_n=2)
ranked = reranker.rerank(documents={DOCUMENTS!r}, query={QUERY!r})
kept = reranker.compress_documents([Document(page_content=d) for d in {DOCUMENTS!r}], {QUERY!r})
print(json.dumps({{"rerank": [[r["index"], r["relevance_score"]] for r in ranked],
                   "compressed": [d.page_content for d in kept]}}))
"""

LITELLM = f"""
import json, sys
import litellm
url, token, model = sys.argv[1:4]
out = {{}}
for provider in ("cohere", "hosted_vllm", "jina_ai"):
    try:
        ranked = litellm.rerank(model=provider + "/" + model, query={QUERY!r}, documents={DOCUMENTS!r},
                                top_n=2, api_base=url, api_key=token)
        out[provider] = [[r["index"], r["relevance_score"]] for r in ranked.results]
    except Exception as exc:
        out[provider] = type(exc).__name__ + ": " + str(exc)[:300]
print(json.dumps(out))
"""


def ranked_best_first(pairs: object) -> bool:
    assert isinstance(pairs, list) and len(pairs) == 2, pairs
    return bool(pairs[0][0] == BEST and pairs[0][1] > pairs[1][1])


@pytest.fixture(scope="module")
def env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("client-envs")


def client_envs(name: str, root: Path) -> list[ClientEnv]:
    library = LIBRARIES[name]
    return [ClientEnv.create(library, version, root) for version in versions_to_test(library)]


def args(stack: RunningStack) -> tuple[str, str, str]:
    return stack.gateway_url, stack.token, stack.served_name


def test_cohere_sdk_v2_and_v1_clients(cross_encoder_stack: RunningStack, env_root: Path) -> None:
    for env in client_envs("cohere", env_root):
        out = env.run(COHERE, *args(cross_encoder_stack))
        assert ranked_best_first(out["v2"]), (env.version, out)
        if "v1_documents" in out:
            assert out["v1_documents"][0] == DOCUMENTS[BEST], (env.version, out)
        status, body = out["refused"]
        assert status == 401 and set(body) == {"message"}, (env.version, out)  # Cohere's own error shape


def test_langchain_cohere_rerank(cross_encoder_stack: RunningStack, env_root: Path) -> None:
    """LangChain's CohereRerank sends "max_tokens_per_doc": null; it must get an answer, not a 400."""
    for env in client_envs("langchain-cohere", env_root):
        out = env.run(LANGCHAIN, *args(cross_encoder_stack))
        assert ranked_best_first(out["rerank"]), (env.version, out)
        assert out["compressed"][0] == DOCUMENTS[BEST], (env.version, out)


def test_litellm_rerank_through_the_cohere_and_vllm_routes(cross_encoder_stack: RunningStack, env_root: Path) -> None:
    for env in client_envs("litellm", env_root):
        out = env.run(LITELLM, *args(cross_encoder_stack))
        assert ranked_best_first(out["cohere"]), (env.version, out)
        assert ranked_best_first(out["hosted_vllm"]) or ranked_best_first(out["jina_ai"]), (env.version, out)
