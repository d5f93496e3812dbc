"""Secrets and exposure: vLLM only on loopback, no token in logs, process listings or error pages, the
token file private, the landing page locked down (CSP) and its cookie useless to other sites.

Runs against the shared MiniLM stack (read-only: it only sends requests) and, for the generated-token
file, a gateway process of its own. Starting the stack with VLLM_ARGS="--host 0.0.0.0" is refused in
test_stack.py::test_vllm_public_host_is_refused; the spellings of that request are checked here on
`reranker plan`, which plans without starting anything.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import os
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.gateway_upstream import start_gateway
from support.stack_runner import RERANKER, RunningStack, minilm_dir, processes_with_env, stack_env

from reranker_template.client.http import body_message
from reranker_template.gateway import auth

# Every test starts something: `reranker plan`, a gateway process, or uses the shared vLLM stack.
pytestmark = pytest.mark.slow

LISTEN = "0A"


# --- vLLM stays on loopback -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "vllm_args",
    [
        "--host 0.0.0.0",
        "--host=0.0.0.0",
        "--host ::",
        "--host [::]",
        "--host=",
        "--host 10.1.2.3",
        "--max-model-len 256 --host 0.0.0.0",
    ],
)
def test_any_public_vllm_host_is_refused(tmp_path: Path, vllm_args: str) -> None:
    env = stack_env(tmp_path, str(minilm_dir()), "minilm", {"VLLM_ARGS": vllm_args})
    result = subprocess.run([RERANKER, "plan"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "vLLM must stay on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Listening TCP sockets of this machine: inode -> (address, port), from /proc/net/tcp{,6}."""
    found: dict[int, tuple[str, int]] = {}
    for name, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{name}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state != LISTEN:
                continue
            hex_address, hex_port = local.split(":")
            raw = bytes.fromhex(hex_address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            address = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[inode] = (str(ipaddress.ip_address(address if size == 16 else address[:4])), int(hex_port, 16))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


@pytest.mark.vllm
def test_stack_listens_only_on_loopback(minilm_stack: RunningStack) -> None:
    """Every listening TCP socket of every process of the stack (supervisord, launcher, vLLM and its engine,
    the gateway) is on a loopback address, vLLM's port included. In this test GATEWAY_HOST is 127.0.0.1
    too; in the container the gateway alone listens on 0.0.0.0."""
    listening = listening_sockets()
    owned: dict[tuple[str, int], list[int]] = {}
    for pid in processes_with_env("RERANKER_STATE_DIR", str(minilm_stack.state_dir)):
        for inode in socket_inodes(pid) & listening.keys():
            owned.setdefault(listening[inode], []).append(pid)
    vllm_port = int(minilm_stack.env["VLLM_PORT"])
    gateway_port = int(minilm_stack.env["GATEWAY_PORT"])
    ports = {port for _, port in owned}
    assert vllm_port in ports and gateway_port in ports, owned
    public = {address: pids for address, pids in owned.items() if not ipaddress.ip_address(address[0]).is_loopback}
    assert not public, f"listening on a public address: {public}"
    # Nothing else on the machine holds vLLM's port on another address either.
    assert {address for address, port in listening.values() if port == vllm_port} == {"127.0.0.1"}


def local_ipv4_addresses() -> set[str]:
    """This machine's own IPv4 addresses, from the kernel's routing table (no tool needed)."""
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    return {previous.split()[-1] for previous, line in itertools.pairwise(lines) if "/32 host LOCAL" in line}


@pytest.mark.vllm
def test_vllm_port_is_not_reachable_on_a_non_loopback_address(minilm_stack: RunningStack) -> None:
    addresses = {a for a in local_ipv4_addresses() if not ipaddress.ip_address(a).is_loopback}
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for address in addresses:
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex((address, int(minilm_stack.env["VLLM_PORT"]))) != 0, address


# --- No token in logs, process listings or error pages ----------------------------------------------------


def present_token_every_way(stack: RunningStack) -> None:
    """Requests carrying the right token (and a wrong one) in every place a client can put it, including
    malformed requests that aiohttp logs with their raw bytes."""
    token, url = stack.token, stack.gateway_url
    cookie = {auth.cookie_name(stack.env, int(stack.env["GATEWAY_PORT"])): token}
    basic = base64.b64encode(f"user:{token}".encode()).decode()
    body = {"model": "minilm", "query": "q", "documents": ["a", "b"]}
    requests.get(f"{url}/v1/models?token={token}", timeout=30)
    requests.get(
        f"{url}/?token={token}",
        headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"},
        allow_redirects=False,
        timeout=30,
    )
    requests.post(f"{url}/v1/rerank?token={token}&x=1", json=body, timeout=30)
    requests.post(f"{url}/v1/rerank", json=body, headers={"Authorization": f"Basic {basic}"}, timeout=30)
    requests.post(f"{url}/v1/rerank", json=body, cookies=cookie, headers={"Origin": "https://evil.example"}, timeout=30)
    requests.get(f"{url}/no/such/route?token={token}", timeout=30)
    requests.get(f"{url}/v1/models?token=wrong-{token}", timeout=30)
    port = int(stack.env["GATEWAY_PORT"])
    cookie_name = next(iter(cookie))
    for raw in (
        f"GET /v1/models?token={token}&x=\xff HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"),
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}{' ' * 9000}x\r\n\r\n".encode(),
        f"GET /v1/models HTTP/1.1\r\nHost: x\r\nCookie: {cookie_name}={token}; pad={'p' * 9000}\r\n\r\n".encode(),
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            sock.recv(65536)


@pytest.mark.vllm
def test_no_token_in_logs(minilm_stack: RunningStack) -> None:
    present_token_every_way(minilm_stack)
    time.sleep(1.5)  # the access log is written in batches twice a second
    logs = [minilm_stack.output, *sorted((minilm_stack.state_dir / "logs").glob("*"))]
    assert any(path.name == "gateway.log" for path in logs) and any(path.name == "vllm.log" for path in logs)
    for path in logs:
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert minilm_stack.token not in text, f"the token is in {path}"
    gateway_log = (minilm_stack.state_dir / "logs" / "gateway.log").read_text()
    assert "token=REDACTED" in gateway_log


@pytest.mark.vllm
def test_no_token_in_files_of_the_state_directory(minilm_stack: RunningStack) -> None:
    """The rendered supervisord config, the plan, the status file: tokens reach processes only through
    their environment, never a file (API_KEYS was given, so there is no token file either)."""
    for path in minilm_stack.state_dir.rglob("*"):
        if path.is_file() and not path.is_socket():
            assert minilm_stack.token.encode() not in path.read_bytes(), path


@pytest.mark.vllm
def test_no_token_in_process_command_lines(minilm_stack: RunningStack) -> None:
    pids = processes_with_env("RERANKER_STATE_DIR", str(minilm_stack.state_dir))
    assert len(pids) >= 4, pids  # serve, supervisord, launcher, vLLM, engine, gateway
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert minilm_stack.token.encode() not in cmdline, cmdline.replace(b"\0", b" ")
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30).stdout
    assert minilm_stack.token not in listing


@pytest.mark.vllm
def test_no_token_in_error_pages(minilm_stack: RunningStack) -> None:
    """Errors never echo a token: not the right one sent in the query, nor a wrong one a client tried."""
    token, url = minilm_stack.token, minilm_stack.gateway_url
    wrong = "wrong-guess-" + token[::-1]
    answers = [
        requests.get(f"{url}/v1/models?token={wrong}", timeout=30),
        requests.get(f"{url}/v1/models?token={wrong}", headers={"Accept": "text/html"}, timeout=30),
        requests.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {wrong}"}, timeout=30),
        requests.get(f"{url}/no/such/route?token={token}", timeout=30),
        requests.post(
            f"{url}/v1/rerank?token={token}",
            data=b"{bad json",
            timeout=30,
            headers={"Content-Type": "application/json"},
        ),
        requests.post(f"{url}/v1/rerank?token={token}", json={"model": "minilm", "query": 1}, timeout=30),
        requests.post(
            f"{url}/v1/rerank?token={token}", json={"model": "nope", "query": "q", "documents": ["a"]}, timeout=30
        ),
        requests.request("PROPFIND", f"{url}/v1/rerank?token={token}", timeout=30),
        requests.post(
            f"{url}/v1/rerank",
            timeout=30,
            cookies={auth.cookie_name(minilm_stack.env, int(minilm_stack.env["GATEWAY_PORT"])): token},
            headers={"Origin": "https://evil.example"},
            json={},
        ),
    ]
    for response in answers:
        assert response.status_code >= 400, response.url
        assert token not in response.text and wrong not in response.text, (response.status_code, response.text[:300])
        assert all(token not in value and wrong not in value for value in response.headers.values()), response.headers
    redirect = requests.get(
        f"{url}/docs?token={token}&a=1",
        headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"},
        allow_redirects=False,
        timeout=30,
    )
    assert redirect.status_code == 302 and token not in redirect.headers["Location"]


@pytest.fixture
def generated_token_gateway(tmp_path: Path) -> Iterator[Path]:
    gateway = start_gateway(tmp_path)  # no token configured: the gateway generates one
    try:
        deadline = time.monotonic() + 20
        while not (gateway.state_dir / "token").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield gateway.state_dir
    finally:
        gateway.stop()


def test_generated_token_file_is_private(generated_token_gateway: Path) -> None:
    token_file = generated_token_gateway / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.stat().st_uid == os.getuid()
    assert len(token_file.read_text().strip()) >= 40  # 256 random bits
    leftovers = [p.name for p in generated_token_gateway.iterdir() if p.name.startswith("token.")]
    assert not leftovers, leftovers


# --- The landing page: CSP, and its cookie is useless cross-site ------------------------------------------


@pytest.mark.vllm
def test_landing_and_login_pages_send_a_strict_csp(minilm_stack: RunningStack) -> None:
    url = minilm_stack.gateway_url
    pages = [
        requests.get(url + "/", headers={"Authorization": f"Bearer {minilm_stack.token}"}, timeout=30),
        requests.get(url + "/", headers={"Accept": "text/html"}, timeout=30),  # the token prompt (401)
    ]
    for page in pages:
        assert "text/html" in page.headers["Content-Type"]
        policy = {
            part.strip().split(" ", 1)[0]: part.strip() for part in page.headers["Content-Security-Policy"].split(";")
        }
        assert policy["default-src"] == "default-src 'none'"
        assert policy["script-src"] == "script-src 'self'"  # no inline script, no eval, no CDN
        assert policy["connect-src"] == "connect-src 'self'"
        assert policy["frame-ancestors"] == "frame-ancestors 'none'"  # no clickjacking in a frame
        assert policy["form-action"] == "form-action 'self'"
        assert "unsafe" not in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        assert page.headers["Cache-Control"] == "no-store"  # the page shows the token: never cached
        assert "<script>" not in page.text  # scripts only from files, as the CSP demands


@pytest.mark.vllm
def test_try_it_form_cannot_be_driven_cross_site(minilm_stack: RunningStack) -> None:
    """The browser's cookie (set by opening ?token=) works for the page's own POST, and for no other site's."""
    session = requests.Session()
    url = minilm_stack.gateway_url
    opened = session.get(
        f"{url}/?token={minilm_stack.token}",
        allow_redirects=False,
        timeout=30,
        headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"},
    )
    assert opened.status_code == 302
    set_cookie = opened.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
    body = {"model": "minilm", "query": "green tea", "documents": ["green tea", "basketball"]}

    own = session.post(
        url + "/v1/rerank",
        json=body,
        timeout=60,
        headers={"Origin": url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},
    )
    assert own.status_code == 200 and len(own.json()["results"]) == 2

    for headers in (
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},  # an older browser without Fetch metadata
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": url.replace("127.0.0.1", "localhost")},  # a sibling port/host
        {"Origin": "null"},  # a sandboxed frame or a file:// page
    ):
        for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
            refused = session.post(
                url + "/v1/rerank",
                data=b'{"model": "minilm", "query": "q", "documents": ["a"]}',
                headers={**headers, "Content-Type": content_type},
                timeout=30,
            )
            assert refused.status_code == 403, (headers, content_type, refused.text[:200])
            assert "cross-site" in str(body_message(refused.json()))
    # Basic auth is remembered by browsers too: the same rule applies to it.
    basic = requests.post(
        url + "/v1/rerank",
        json=body,
        auth=("user", minilm_stack.token),
        timeout=30,
        headers={"Origin": "https://evil.example"},
    )
    assert basic.status_code == 403


@pytest.mark.vllm
def test_cookie_answers_cannot_be_read_by_another_site(minilm_stack: RunningStack) -> None:
    """A cross-site GET with the cookie is let through (it changes nothing), but no answer allows the other
    site's script to read it: no `Access-Control-Allow-Credentials: true`, from us or from vLLM."""
    url = minilm_stack.gateway_url
    cookies = {auth.cookie_name(minilm_stack.env, int(minilm_stack.env["GATEWAY_PORT"])): minilm_stack.token}
    cross_site = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    for route in ("/v1/models", "/metrics", "/", "/openapi.json"):
        response = requests.get(url + route, cookies=cookies, headers=cross_site, timeout=30)
        assert response.status_code == 200, route
        assert response.headers.get("Access-Control-Allow-Credentials", "").lower() != "true", (route, response.headers)
