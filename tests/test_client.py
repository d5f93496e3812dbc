"""The Python client, `reranker query` and `reranker health` against the real stack (MiniLM behind the gateway)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from support.loopback import LoopbackServer, Reply, free_port
from support.stack_runner import RERANKER, minilm_dir, start_stack

from reranker_template.cli.client import Endpoint, resolve_endpoint
from reranker_template.cli.common import read_documents
from reranker_template.client.http import Health, RerankerClient, retry_after_seconds
from reranker_template.errors import ConfigError, NotReadyError, RerankerError
from reranker_template.gateway.tls import generate_self_signed
from reranker_template.protocol import HealthState
from reranker_template.settings import BUNDLED_MODEL

QUERY = "What are the health benefits of green tea?"
DOCS = [
    "Basketball is one of the most popular sports in the United States.",
    "Green tea contains antioxidants called catechins that may help reduce inflammation.",
    "The price of coffee has risen by 20% this year.",
    "Studies show that drinking green tea regularly can improve brain function.",
]
TEA = {1, 3}


def client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RERANKER_", "VLLM_", "API_KEYS", "OPEN_BUTTON", "WEB_PASSWORD"))
    }
    env.update({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"})
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RERANKER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


# --- pure parts ----------------------------------------------------------------------------------
def test_retry_after_is_read_as_seconds_with_a_fallback() -> None:
    assert retry_after_seconds("10", 1.0) == 10.0
    assert retry_after_seconds("0.5", 1.0) == 0.5
    assert retry_after_seconds(None, 2.0) == 2.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 3.0) == 3.0
    assert retry_after_seconds("-4", 3.0) == 3.0


def test_endpoint_comes_from_flags_then_environment_then_the_local_stack(tmp_path: Path) -> None:
    state = tmp_path / "state" / "reranker"
    state.mkdir(parents=True)
    (state / "token").write_text("generated-token\n")
    env = client_env(tmp_path, GATEWAY_PORT="8123")
    assert resolve_endpoint(None, None, env) == Endpoint("http://127.0.0.1:8123", "generated-token", verify=True)
    assert resolve_endpoint("http://h:1/", "t", env) == Endpoint("http://h:1", "t", verify=True)
    # Another host gets no local token by accident; the local URL spelled out does.
    assert resolve_endpoint("http://h:1", None, env).token is None
    assert resolve_endpoint("http://127.0.0.1:8123", None, env).token == "generated-token"
    env.update(RERANKER_URL="http://remote:9", RERANKER_TOKEN="env-token")
    assert resolve_endpoint(None, None, env) == Endpoint("http://remote:9", "env-token", verify=True)
    assert resolve_endpoint("http://flag:2", "flag-token", env) == Endpoint("http://flag:2", "flag-token", verify=True)
    # A configured token wins over the generated file, as for the gateway itself.
    configured = client_env(tmp_path, API_KEYS="configured")
    assert resolve_endpoint(None, None, configured).token == "configured"


def test_only_the_local_https_stack_goes_unverified(tmp_path: Path) -> None:
    """Its certificate is self-signed: the local stack's URL is not verified, however it was given; any other is."""
    env = client_env(tmp_path, GATEWAY_PORT="8123", ENABLE_HTTPS="true", API_KEYS="k")
    assert resolve_endpoint(None, None, env) == Endpoint("https://127.0.0.1:8123", "k", verify=False)
    assert resolve_endpoint("https://127.0.0.1:8123/", "other", env) == Endpoint(
        "https://127.0.0.1:8123", "other", verify=False
    )
    assert resolve_endpoint("https://remote:8123", None, env) == Endpoint("https://remote:8123", None, verify=True)
    # Auth off: no token is sent, not even the one a gateway generated before.
    (tmp_path / "state" / "reranker").mkdir(parents=True)
    (tmp_path / "state" / "reranker" / "token").write_text("generated-token\n")
    assert resolve_endpoint(None, None, client_env(tmp_path)).token == "generated-token"
    assert resolve_endpoint(None, None, client_env(tmp_path, ENABLE_AUTH="false")).token is None


def test_health_is_read_through_the_gateways_body() -> None:
    loading = {"status": "loading", "model": "m", "phase": "downloading", "quality_check": "pending"}
    health = Health.from_answer(503, loading, 10.0)
    assert (health.status, health.reason, health.ready, health.retry_after) == ("loading", "downloading", False, 10.0)
    assert health.status is HealthState.LOADING and health.body == loading
    failed = Health.from_answer(503, {**loading, "status": "failed", "reason": "CUDA out of memory"})
    assert failed.status is HealthState.FAILED and failed.reason == "CUDA out of memory"
    # vLLM itself (or another server) sends no such body: the HTTP status decides.
    assert Health.from_answer(200, None).status is HealthState.READY
    other = Health.from_answer(500, {"status": "ok", "reason": "theirs"})
    assert other.status is HealthState.DOWN and other.reason is None and not other.ready


def test_documents_from_a_file_skip_blank_lines(tmp_path: Path) -> None:
    docs = tmp_path / "docs.txt"
    docs.write_text("first\n\n  second  \n")
    assert read_documents([], str(docs), stdin_is_tty=True) == ["first", "second"]
    assert read_documents(["a", "b"], str(docs), stdin_is_tty=True) == ["a", "b"]
    assert read_documents([], None, stdin_is_tty=True) == []


def test_nothing_listening_is_an_error_without_status_after_the_retry_budget() -> None:
    client = RerankerClient(f"http://127.0.0.1:{free_port()}", "t", retry_for=1.0)
    started = time.monotonic()
    with pytest.raises(RerankerError) as caught:
        client.rerank("q", ["d"])
    assert caught.value.status is None and "connection refused" in caught.value.message
    assert 0.4 < time.monotonic() - started < 5  # it did retry, and it did give up
    with pytest.raises(RerankerError):
        client.health()


# --- against the real stack ----------------------------------------------------------------------
def test_a_given_url_works_despite_a_broken_local_setting(tmp_path: Path) -> None:
    """The local settings only matter when we talk to the local stack."""
    env = client_env(tmp_path, GATEWAY_PORT="abc")
    assert resolve_endpoint("http://h:1", "t", env) == Endpoint("http://h:1", "t", verify=True)
    with pytest.raises(ConfigError, match="GATEWAY_PORT"):
        resolve_endpoint(None, None, env)


@pytest.mark.slow
def test_an_untrusted_certificate_fails_at_once_with_what_to_do(tmp_path: Path) -> None:
    """Retrying cannot make a certificate trusted: no waiting through the retry budget."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    generate_self_signed(cert, key, ["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with LoopbackServer(tls=tls).answer("/v1/rerank", Reply.json({"results": []})).start() as server:
        client = RerankerClient(server.url.replace("http://", "https://"), "t", retry_for=60)
        started = time.monotonic()
        with pytest.raises(RerankerError, match="certificate is not trusted") as failure:
            client.rerank("q", ["d"])
        took = time.monotonic() - started
    assert took < 10, f"took {took:.1f} s"
    assert "REQUESTS_CA_BUNDLE" in str(failure.value)


@pytest.mark.vllm
def test_rerank_ranks_real_documents_best_first(cross_encoder_stack) -> None:
    with RerankerClient(cross_encoder_stack.gateway_url, cross_encoder_stack.token) as client:
        result = client.rerank(QUERY, DOCS)
        assert result.model == BUNDLED_MODEL  # the real cross-encoder a user gets by default
        assert {hit.index for hit in result.results[:2]} == TEA
        assert [hit.relevance_score for hit in result.results] == sorted(
            (hit.relevance_score for hit in result.results), reverse=True
        )
        assert all(hit.document == DOCS[hit.index] for hit in result.results)
        assert result.total_tokens and result.total_tokens > 0

        top = client.rerank(QUERY, DOCS, top_n=2, return_documents=False)
        assert [hit.index for hit in top.results] == [hit.index for hit in result.results[:2]]
        assert all(hit.document is None for hit in top.results)

        scores = client.score(QUERY, DOCS)
        assert len(scores.scores) == len(DOCS)
        by_index = {hit.index: hit.relevance_score for hit in result.results}
        assert scores.scores == pytest.approx([by_index[i] for i in range(len(DOCS))], abs=1e-4)
        pairwise = client.score([QUERY, QUERY], [DOCS[1], DOCS[0]])
        assert pairwise.scores[0] > pairwise.scores[1]


@pytest.mark.vllm
def test_models_and_health(minilm_stack) -> None:
    client = RerankerClient(minilm_stack.gateway_url, minilm_stack.token)
    assert [card.id for card in client.models()] == ["minilm"]
    assert client.served_model() == "minilm"
    health = client.health()
    assert isinstance(health, Health) and health.ready and health.status == "ready"
    assert client.wait_until_ready(timeout=5).ready


@pytest.mark.vllm
def test_errors_carry_the_servers_message_and_status(minilm_stack) -> None:
    wrong = RerankerClient(minilm_stack.gateway_url, "not-the-token")
    with pytest.raises(RerankerError) as caught:
        wrong.rerank(QUERY, DOCS)
    assert caught.value.status == 401

    client = RerankerClient(minilm_stack.gateway_url, minilm_stack.token, model="no-such-model")
    with pytest.raises(RerankerError) as caught:
        client.rerank(QUERY, DOCS)
    assert caught.value.status == 404
    assert "no-such-model" in caught.value.message  # vLLM's own words, passed through
    assert str(caught.value).startswith("HTTP 404: ")


@pytest.mark.vllm
def test_the_official_cohere_client_reranks_through_the_gateway(
    minilm_stack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 001's Cohere example, exactly as written there (host, port and key aside)."""
    import cohere

    IP_ADDRESS = "127.0.0.1"
    PORT = minilm_stack.env["GATEWAY_PORT"]
    VLLM_API_KEY = minilm_stack.token

    def cohere_rerank(query, documents):
        base_url = f"http://{IP_ADDRESS}:{PORT}"
        co = cohere.ClientV2(VLLM_API_KEY, base_url=base_url)

        result = co.rerank(model="minilm", query=query, documents=documents)

        for doc in result.results:
            print(f"Score: {doc.relevance_score:.6f} | {doc.document.text[:60]}...")

    cohere_rerank(QUERY, DOCS)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(DOCS)
    scores = [float(line.split("|")[0].split()[1]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    top_two = {line.split("| ", 1)[1].rstrip(".") for line in lines[:2]}
    assert top_two == {DOCS[i][:60] for i in TEA}


@pytest.mark.vllm
def test_query_command_prints_a_ranked_table_and_json(minilm_stack, tmp_path: Path) -> None:
    env = client_env(tmp_path, RERANKER_URL=minilm_stack.gateway_url, RERANKER_TOKEN=minilm_stack.token)
    table = run_cli(["query", QUERY, *DOCS], env)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if "green tea" in line.lower() or "basketball" in line.lower()]
    assert "Green tea" in lines[0] or "green tea" in lines[0]  # best first
    assert "rank" in table.stdout and "score" in table.stdout and "index" in table.stdout

    as_json = run_cli(["query", QUERY, "--json", "--top-n", "2"], env, stdin="\n".join(DOCS) + "\n")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["model"] == "minilm"
    assert [row["rank"] for row in report["results"]] == [1, 2]
    assert {row["index"] for row in report["results"]} == TEA
    assert all(row["document"] == DOCS[row["index"]] for row in report["results"])

    docs_file = tmp_path / "docs.txt"
    docs_file.write_text("\n".join(DOCS))
    from_file = run_cli(
        [
            "query",
            QUERY,
            "--file",
            str(docs_file),
            "--json",
            "--url",
            minilm_stack.gateway_url,
            "--token",
            minilm_stack.token,
        ],
        client_env(tmp_path),
    )
    assert (
        json.loads(from_file.stdout)["results"]
        == json.loads(run_cli(["query", QUERY, "--json", *DOCS], env).stdout)["results"]
    )


@pytest.mark.vllm
def test_query_command_explains_a_bad_token_and_a_missing_server(minilm_stack, tmp_path: Path) -> None:
    bad = run_cli(["query", QUERY, "doc", "--url", minilm_stack.gateway_url, "--token", "nope"], client_env(tmp_path))
    assert bad.returncode == 1
    assert "401" in bad.stderr and "--token" in bad.stderr and "Traceback" not in bad.stderr

    nobody = run_cli(
        ["query", QUERY, "doc", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t", "--wait", "0"],
        client_env(tmp_path),
    )
    assert nobody.returncode == 1
    assert "connection refused" in nobody.stderr and "Traceback" not in nobody.stderr

    no_docs = run_cli(["query", QUERY], client_env(tmp_path), stdin="")
    assert no_docs.returncode == 1 and "no documents" in no_docs.stderr


@pytest.mark.vllm
def test_health_command(minilm_stack, tmp_path: Path) -> None:
    ready = run_cli(["health", "--url", minilm_stack.gateway_url], client_env(tmp_path))
    assert ready.returncode == 0 and "ready" in ready.stdout and "minilm" in ready.stdout
    down = run_cli(["health", "--url", f"http://127.0.0.1:{free_port()}", "--json"], client_env(tmp_path))
    assert down.returncode == 1 and json.loads(down.stdout)["status"] == "unreachable"


@pytest.mark.vllm
def test_rerank_waits_through_a_loading_model(tmp_path: Path, vllm_cache_root: Path) -> None:
    """A call made while the stack starts is retried (connection refused, then 503 + Retry-After) until it succeeds."""
    stack = start_stack(
        tmp_path / "stack", str(minilm_dir()), served_name="minilm", wait=False, cache_root=vllm_cache_root
    )
    try:
        client = RerankerClient(stack.gateway_url, stack.token, retry_for=400)
        # The gateway comes up long before the model: it answers 503 "loading" with Retry-After.
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline:
            try:
                health = client.health()
                break
            except RerankerError:
                time.sleep(0.2)
        assert health is not None and not health.ready
        assert health.status == "loading" and health.retry_after and health.retry_after > 0
        with pytest.raises(NotReadyError) as caught:
            client.wait_until_ready(timeout=0.5, poll=0.1)
        assert "loading" in caught.value.message

        impatient = RerankerClient(stack.gateway_url, stack.token, retry_for=0)
        with pytest.raises(NotReadyError) as refused:
            impatient.rerank(QUERY, DOCS)
        assert refused.value.status == 503 and "loading" in refused.value.message

        result = client.rerank(QUERY, DOCS)  # retried through the 503s until the model is ready
        assert {hit.index for hit in result.results[:2]} == TEA
        assert client.wait_until_ready(timeout=5).ready
    finally:
        stack.stop()
