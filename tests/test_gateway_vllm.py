"""The gateway in front of a real CPU vLLM (the shared MiniLM stack): the source documents' curl and
Python examples as written (host, port, token and model name aside), and the landing page in headless
Chromium (load with ?token=, submit the try-it form, read the ranked results)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from support.stack_runner import RunningStack

from reranker_template.client.http import body_message

pytestmark = pytest.mark.vllm

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
URL_IN_SEED = re.compile(r"https?://(?:localhost:8000|\$VAST_IP_ADDRESS:\$VAST_PORT|<INSTANCE_IP>:<MAPPED_PORT>)")
TOKEN_IN_SEED = re.compile(r"\$VLLM_API_KEY|<YOUR_TOKEN>|<TOKEN>")


def seed_curl_commands() -> list[tuple[str, str]]:
    """(id, command) for every curl example in the seeds that a text reranker can answer."""
    found = []
    for path in sorted(SEEDS.glob("*.txt")):
        for n, block in enumerate(re.findall(r"```bash[^\n]*\n(.*?)```", path.read_text(), re.S)):
            start = block.find("curl ")
            if start < 0 or "image_url" in block:  # the multimodal example needs jina-reranker-m0 itself
                continue
            found.append((f"{path.stem[:3]}-{n}", block[start:].strip()))
    return found


def adapt(command: str, stack: RunningStack) -> str:
    """Point a seed's curl at our gateway with our token and model; nothing else changes."""
    command = URL_IN_SEED.sub(stack.gateway_url, command)
    command = TOKEN_IN_SEED.sub(stack.token, command)
    command = re.sub(r'"model":\s*"[^"]+"', f'"model": "{stack.served_name}"', command)
    if "Authorization" not in command:
        command = command.replace("curl ", f"curl -H 'Authorization: Bearer {stack.token}' ", 1)
    return command.replace("curl ", "curl -sS --fail-with-body ", 1)


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the source documents (shared/seeds beside the checkout) are not here")
@pytest.mark.parametrize("seed_id, command", seed_curl_commands(), ids=[i for i, _ in seed_curl_commands()])
def test_seed_curl_examples_work_through_the_gateway(minilm_stack: RunningStack, seed_id: str, command: str) -> None:
    result = subprocess.run(["bash", "-c", adapt(command, minilm_stack)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{seed_id}: {result.stdout}{result.stderr}"
    body = json.loads(result.stdout)
    if "results" in body:  # /rerank: sorted by relevance
        scores = [r["relevance_score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True) and scores
    else:
        assert body["object"] == "list" and all(isinstance(d["score"], float) for d in body["data"])


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the source documents (shared/seeds beside the checkout) are not here")
def test_seed_rerank_ranks_green_tea_first(cross_encoder_stack: RunningStack) -> None:
    (command,) = [c for i, c in seed_curl_commands() if i.startswith("000") and "/v1/rerank" in c]
    result = subprocess.run(
        ["bash", "-c", adapt(command, cross_encoder_stack)], capture_output=True, text=True, timeout=120
    )
    body = json.loads(result.stdout)
    assert len(body["results"]) == 3  # top_n
    assert "Basketball" not in json.dumps(body["results"])
    assert "tea" in body["results"][0]["document"]["text"].lower() or "茶" in body["results"][0]["document"]["text"]


def test_seed_python_requests_score_example(minilm_stack: RunningStack) -> None:
    """Seed 001's openai_score(), with its base URL and key pointed at the gateway."""
    documents = [
        "Deep learning is a subset of machine learning that uses neural networks with many layers",
        "The weather is nice today",
        "Deep learning enables computers to learn from large amounts of data",
        "I like pizza",
    ]
    headers = {"Authorization": f"Bearer {minilm_stack.token}"}
    request = {"model": minilm_stack.served_name, "text_1": "What is Deep Learning?", "text_2": documents}
    response = requests.post(f"{minilm_stack.gateway_url}/score", json=request, headers=headers, timeout=60)
    assert response.status_code == 200
    scores = sorted(
        ((doc, item["score"]) for doc, item in zip(documents, response.json()["data"], strict=True)),
        key=lambda x: -x[1],
    )
    assert scores[0][0].startswith("Deep learning") and scores[1][0].startswith("Deep learning")


def test_seed_cohere_client_example(cross_encoder_stack: RunningStack) -> None:
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(cross_encoder_stack.token, base_url=cross_encoder_stack.gateway_url)
    result = co.rerank(
        model=cross_encoder_stack.served_name,
        query="What is deep learning?",
        documents=["I like pizza", "Deep learning is a type of machine learning"],
    )
    assert [doc.index for doc in result.results] == [1, 0]
    assert result.results[0].relevance_score > result.results[1].relevance_score
    wrong = cohere.ClientV2("not-the-token", base_url=cross_encoder_stack.gateway_url)
    with pytest.raises(Exception) as raised:
        wrong.rerank(model=cross_encoder_stack.served_name, query="q", documents=["d"])
    assert "401" in str(raised.value)


def test_bad_requests_get_4xx_json_from_the_real_stack(minilm_stack: RunningStack) -> None:
    headers = {"Authorization": f"Bearer {minilm_stack.token}"}
    for body in ({"model": minilm_stack.served_name, "query": 5}, {"documents": "not a list"}):
        response = requests.post(minilm_stack.gateway_url + "/v1/rerank", json=body, headers=headers, timeout=60)
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["Content-Type"].startswith("application/json")
    response = requests.post(
        minilm_stack.gateway_url + "/v1/rerank",
        data="{oops",
        timeout=60,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "JSON" in str(body_message(response.json()))


def test_health_names_the_served_model(minilm_stack: RunningStack) -> None:
    body = requests.get(minilm_stack.gateway_url + "/health", timeout=10).json()
    assert body["status"] == "ready" and body["model"] == minilm_stack.served_name


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make browser installs it)")
def test_landing_page_try_it_form_in_a_real_browser(cross_encoder_stack: RunningStack) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.goto(f"{cross_encoder_stack.gateway_url}/?token={cross_encoder_stack.token}")
            assert page.url == cross_encoder_stack.gateway_url + "/"  # redirected to the clean URL
            cookies = page.context.cookies()
            assert any(
                c["httpOnly"] and c["sameSite"] == "Lax" and c["value"] == cross_encoder_stack.token for c in cookies
            )
            assert page.locator("#model-name").inner_text() == cross_encoder_stack.served_name
            assert page.locator("#status").inner_text().startswith("ready")
            examples = page.locator("#use").inner_text()
            assert cross_encoder_stack.gateway_url in examples and cross_encoder_stack.token in examples
            assert "cohere.ClientV2" in examples and "-L " in examples
            page.click("#try-submit")
            page.wait_for_selector("#try-results tbody tr", timeout=60_000)
            rows = page.locator("#try-results tbody tr").all_inner_texts()
            assert len(rows) == 4
            assert "green tea" in rows[0].lower() and "green tea" in rows[1].lower()
            scores = [
                float(page.locator(f"#try-results tbody tr:nth-child({i}) td.score").inner_text()) for i in (1, 2, 3, 4)
            ]
            assert scores == sorted(scores, reverse=True)
            page.screenshot(path=str(cross_encoder_stack.state_dir / "landing.png"), full_page=True)
            assert not problems, problems  # no CSP violations, no script errors
        finally:
            browser.close()
