"""Token auth of the gateway: the full route x credential matrix against the real gateway process,
the browser cookie flow, CSRF refusal, and the token helpers."""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.gateway_upstream import FakeUpstream, GatewayProcess, start_gateway

from reranker_template.client.http import body_message
from reranker_template.gateway import auth

TOKEN = "s3cret-token-for-tests"
OTHER = "second-key"
PROXIED_ROUTES = [
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/v1/score",
    "/score",
    "/v1/models",
    "/pooling",
    "/classify",
    "/tokenize",
    "/detokenize",
    "/invocations",
    "/docs",
    "/openapi.json",
    "/no/such/route",
    "/version",
]
OWN_ROUTES = ["/", "/metrics"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("gw-auth")
    gw = start_gateway(tmp, {"OPEN_BUTTON_TOKEN": TOKEN, "API_KEYS": f" {OTHER} ,another", "CONTAINER_ID": "4242"})
    upstream = FakeUpstream(gw.vllm_port).start()
    gw.wait_status("ready")
    yield gw
    gw.stop()
    upstream.stop()


def cookie_jar(gw: GatewayProcess, token: str) -> dict[str, str]:
    return {auth.cookie_name({"CONTAINER_ID": "4242"}, gw.port): token}


def call(gw: GatewayProcess, route: str, how: str) -> requests.Response:
    url = gw.url + route
    kwargs: dict[str, Any] = {}
    if how == "wrong":
        kwargs["headers"] = {"Authorization": "Bearer not-the-token"}
    elif how == "bearer":
        kwargs["headers"] = {"Authorization": f"Bearer {TOKEN}"}
    elif how == "query":
        url += f"?token={TOKEN}"
    elif how == "cookie":
        kwargs["cookies"] = cookie_jar(gw, TOKEN)
    elif how == "basic":
        kwargs["auth"] = ("user", TOKEN)
    method = "POST" if route in ("/v1/rerank", "/v2/rerank", "/rerank", "/v1/score", "/score") else "GET"
    if method == "POST":
        kwargs["json"] = {"model": "m", "query": "q", "documents": ["d"]}
    return requests.request(method, url, timeout=10, allow_redirects=False, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("route", PROXIED_ROUTES + OWN_ROUTES)
@pytest.mark.parametrize("how", ["none", "wrong", "bearer", "query", "cookie", "basic"])
def test_auth_matrix(gateway: GatewayProcess, route: str, how: str) -> None:
    response = call(gateway, route, how)
    if how in ("none", "wrong"):
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.headers["Content-Type"].startswith("application/json")
        assert "token" in str(body_message(response.json()))
        return
    assert response.status_code == 200, response.text
    if route == "/":
        assert "text/html" in response.headers["Content-Type"]
    elif route == "/metrics":
        assert "reranker_gateway_requests_total" in response.text
    elif route != "/v1/rerank":
        seen = response.json()  # what the upstream received: none of our credentials
        assert seen["path"] == route
        assert "token" not in seen["query"]
        assert "Authorization" not in seen["headers"]
        assert TOKEN not in str(seen["headers"])


@pytest.mark.slow
@pytest.mark.parametrize("route", ["/health", "/ping"])
def test_health_and_ping_need_no_token(gateway: GatewayProcess, route: str) -> None:
    response = requests.get(gateway.url + route, timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


@pytest.mark.slow
def test_every_configured_token_is_accepted(gateway: GatewayProcess) -> None:
    for token in (TOKEN, OTHER, "another"):
        response = requests.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert response.status_code == 200, token


@pytest.mark.slow
def test_basic_auth_forms(gateway: GatewayProcess) -> None:
    url = gateway.url + "/v1/models"
    assert requests.get(url, auth=("", TOKEN), timeout=5).status_code == 200  # curl -u :TOKEN
    assert requests.get(url, auth=(TOKEN, ""), timeout=5).status_code == 200  # token typed as the user name
    assert requests.get(url, auth=("user", "nope"), timeout=5).status_code == 401
    garbage = {"Authorization": "Basic !!!not-base64"}
    response = requests.get(url, headers=garbage, timeout=5)
    assert response.status_code == 401 and response.json()["error"]["code"] == 401


@pytest.mark.slow
def test_browser_without_token_gets_a_token_page(gateway: GatewayProcess) -> None:
    response = requests.get(gateway.url + "/", headers={"Accept": "text/html,*/*"}, timeout=5)
    assert response.status_code == 401
    assert "text/html" in response.headers["Content-Type"]
    assert "Token required" in response.text and 'name="token"' in response.text
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    wrong = requests.get(gateway.url + "/?token=bad", headers={"Accept": "text/html"}, timeout=5, allow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text


@pytest.mark.slow
def test_cookie_flow_for_a_browser_navigation(gateway: GatewayProcess) -> None:
    session = requests.Session()
    nav = {"Accept": "text/html,application/xhtml+xml", "Sec-Fetch-Mode": "navigate"}
    response = session.get(f"{gateway.url}/docs?token={TOKEN}&x=1", headers=nav, allow_redirects=False, timeout=5)
    assert response.status_code == 302
    assert response.headers["Location"] == "/docs?x=1"  # the clean URL: token gone, the rest kept
    set_cookie = response.headers["Set-Cookie"]
    name = auth.cookie_name({"CONTAINER_ID": "4242"}, gateway.port)
    assert set_cookie.startswith(f"{name}=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"):
        assert attribute in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP: a Secure cookie would never come back
    followed = session.get(gateway.url + response.headers["Location"], headers=nav, timeout=5)
    assert followed.status_code == 200
    seen = followed.json()
    assert seen["path"] == "/docs" and seen["query"] == "x=1"
    assert name not in seen["headers"].get("Cookie", "")


@pytest.mark.slow
def test_program_using_query_token_is_served_directly(gateway: GatewayProcess) -> None:
    response = requests.get(f"{gateway.url}/v1/models?a=1&token={TOKEN}&b=2", timeout=5, allow_redirects=False)
    assert response.status_code == 200
    assert response.json()["query"] == "a=1&b=2"
    assert "Set-Cookie" not in response.headers or "reranker_auth" not in response.headers["Set-Cookie"]


@pytest.mark.slow
def test_other_cookies_and_headers_pass_through(gateway: GatewayProcess) -> None:
    name = auth.cookie_name({"CONTAINER_ID": "4242"}, gateway.port)
    response = requests.get(
        gateway.url + "/v1/models",
        headers={"Cookie": f"a=1; {name}={TOKEN}; b=2", "X-Request-Id": "abc", "Accept": "application/json"},
        timeout=5,
    )
    assert response.status_code == 200
    seen = requests.structures.CaseInsensitiveDict(response.json()["headers"])
    assert seen["Cookie"] == "a=1; b=2"
    assert seen["X-Request-Id"] == "abc" and seen["Accept"] == "application/json"
    assert response.headers["X-Upstream"] == "fake"  # upstream response headers come back too


@pytest.mark.slow
def test_cookie_authenticated_cross_site_post_is_refused(gateway: GatewayProcess) -> None:
    cookies = cookie_jar(gateway, TOKEN)
    body = {"model": "m", "query": "q", "documents": ["a"]}
    evil = requests.post(
        gateway.url + "/v1/rerank", json=body, cookies=cookies, headers={"Origin": "https://evil.example"}, timeout=5
    )
    assert evil.status_code == 403 and "cross-site" in str(body_message(evil.json()))
    fetch_meta = requests.post(
        gateway.url + "/v1/rerank", json=body, cookies=cookies, headers={"Sec-Fetch-Site": "cross-site"}, timeout=5
    )
    assert fetch_meta.status_code == 403
    same = requests.post(
        gateway.url + "/v1/rerank",
        json=body,
        cookies=cookies,
        headers={"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"},
        timeout=5,
    )
    assert same.status_code == 200
    # A program with the token in a header is not a browser being tricked: any Origin is fine.
    bearer = requests.post(
        gateway.url + "/v1/rerank",
        json=body,
        timeout=5,
        headers={"Origin": "https://elsewhere.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert bearer.status_code == 200


@pytest.mark.slow
def test_tokens_never_reach_the_log(gateway: GatewayProcess) -> None:
    requests.get(f"{gateway.url}/v1/models?token={TOKEN}", timeout=5)
    requests.get(f"{gateway.url}/v1/models?token=wrong-guess", timeout=5)
    deadline = time.monotonic() + 10  # the access log is written in batches, twice a second
    text = gateway.log_text()
    while text.count("GET /v1/models") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        text = gateway.log_text()
    assert "token=REDACTED" in text
    assert TOKEN not in text and OTHER not in text and "wrong-guess" not in text


# --- helpers, without a server -----------------------------------------------------------------------


def test_checker_accepts_only_configured_tokens() -> None:
    checker = auth.TokenChecker(["abc", "def"])
    assert checker.matches("abc") and checker.matches("def")
    assert not checker.matches("ab") and not checker.matches("abcd") and not checker.matches("")
    assert not checker.matches(None)
    assert not auth.TokenChecker([]).matches("abc")


def test_token_parameters_are_stripped_and_the_rest_kept_byte_for_byte() -> None:
    assert auth.strip_token_param("token=a&x=1&token=b&token&y=2&token=") == "x=1&y=2"
    assert auth.strip_token_param("q=%2F%20a&tokens=1&token=x") == "q=%2F%20a&tokens=1"


def test_header_token_parsing() -> None:
    basic = "Basic " + base64.b64encode(b"me:tok:with:colons").decode()
    assert auth.header_token(basic) == ("tok:with:colons", "basic")
    assert auth.header_token("bearer   tok  ") == ("tok", "bearer")
    assert auth.header_token("Digest abc") is None
    assert auth.header_token("Basic " + base64.b64encode(b"\xff\xfe").decode()) is None


@pytest.mark.parametrize(
    "raw, redacted",
    [
        ("/x?token=abc", "/x?token=REDACTED"),
        ("/x?a=1&token=abc&b=2", "/x?a=1&token=REDACTED&b=2"),
        ("/x?TOKEN=abc", "/x?TOKEN=REDACTED"),
        ("/x?mytoken=abc", "/x?mytoken=abc"),
        ("/x?api_key=k", "/x?api_key=REDACTED"),
    ],
)
def test_redact(raw: str, redacted: str) -> None:
    assert auth.redact(raw) == redacted


def test_generated_token_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token"
    first = auth.load_or_create_token(path)
    assert len(first) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert auth.load_or_create_token(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind


def test_an_empty_token_file_is_replaced_privately(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n")
    path.chmod(0o644)
    token = auth.load_or_create_token(path)
    assert token and path.read_text().strip() == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]
