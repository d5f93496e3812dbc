"""The `reranker` command as a whole: what its programs import, how it parses, how errors end it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.gateway_upstream import REPO, FakeUpstream, GatewayProcess, start_gateway
from support.loopback import free_port

from reranker_template.cli import main, parse_args

HEAVY = ("rich", "requests", "vastai", "aiohttp")

# Runs the CLI in a fresh interpreter, then imports what the command imports when it really runs
# (`runs`), and reports the heavy modules loaded after each step.
PROBE = """
import json, sys
from reranker_template.cli import main
try:
    main(sys.argv[2:])
except SystemExit:
    pass
after_cli = [m for m in {heavy!r} if m in sys.modules]
if sys.argv[1]:
    __import__(sys.argv[1])
after_run = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps([after_cli, after_run]), file=sys.stderr)
"""


def probe(argv: list[str], runs: str = "") -> tuple[list[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), runs, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    after_cli, after_run = json.loads(result.stderr.splitlines()[-1])
    return after_cli, after_run


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "runs", "needs"),
    [
        (["--help"], "", ()),
        (["gateway", "--help"], "reranker_template.gateway.server", ("aiohttp",)),
        (["boot", "--help"], "reranker_template.serve.stack", ()),
        (["provision", "--help"], "reranker_template.serve.provisioning", ()),
    ],
    ids=["parser", "gateway", "boot", "provision"],
)
def test_the_stacks_own_programs_import_nothing_heavy(argv: list[str], runs: str, needs: tuple[str, ...]) -> None:
    """supervisord's programs and the entrypoint start often and run long: building the parser loads none
    of rich, requests, the Vast SDK or aiohttp, and running the command loads only what it needs."""
    after_cli, after_run = probe(argv, runs)
    assert after_cli == [], f"`reranker {' '.join(argv)}` imported {after_cli}"
    assert set(after_run) <= set(needs), f"{runs} imported {after_run}"


def test_options_may_stand_anywhere_among_the_documents() -> None:
    args = parse_args(["query", "q", "--json", "d1", "--top-n", "2", "d2"])
    assert (args.query, args.documents, args.json, args.top_n) == ("q", ["d1", "d2"], True, 2)
    offline = parse_args(["score-offline", "q", "d1", "--model", "m", "d2"])
    assert (offline.documents, offline.model) == (["d1", "d2"], "m")
    assert parse_args(["bench", "--docs", "3"]).docs == 3  # other commands parse as argparse always did


def test_usage_errors_exit_2_with_the_commands_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["query", "q", "d", "--top-n", "0"], ["bench", "--timeout", "-1"], ["no-such-command"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("usage: reranker") and "error:" in err, err


def test_an_unreachable_endpoint_is_one_line_with_a_hint_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for argv in (["query", "q", "doc", "--wait", "0"], ["bench", "--requests", "1", "--concurrency", "1"]):
        assert main([*argv, "--url", nobody, "--token", "t"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"reranker: cannot reach {nobody}: connection refused (is the stack running?"), err
        assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.fixture
def https_stack(tmp_path: Path) -> Iterator[GatewayProcess]:
    """The local stack's gateway with HTTPS (self-signed) and the token it generated, vLLM stood in for."""
    gateway = start_gateway(tmp_path, {"ENABLE_HTTPS": "true", "REQUESTS_CA_BUNDLE": "", "CURL_CA_BUNDLE": ""})
    yield gateway
    gateway.stop()


def reranker(gateway: GatewayProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    """A command as a user on the serving machine types it: no --url, no --token."""
    command = [sys.executable, "-m", "reranker_template.cli", *argv]
    return subprocess.run(command, env=gateway.env, cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # our self-signed test stack
def test_the_local_https_stack_without_flags(https_stack: GatewayProcess) -> None:
    """`health`, `token` and `query` find the local stack, its token and its self-signed certificate alone."""
    loading = reranker(https_stack, "health", "--json")
    body = requests.get(https_stack.url + "/health", verify=False, timeout=5).json()
    assert loading.returncode == 1
    assert json.loads(loading.stdout) == {"url": https_stack.url, "http_status": 503, **body}
    text = reranker(https_stack, "health")
    assert text.returncode == 1 and text.stdout.startswith(f"{https_stack.url}: loading (")
    assert text.stdout.rstrip().endswith(", model test-model")

    upstream = FakeUpstream(https_stack.vllm_port).start()
    try:
        https_stack.wait_status("ready", verify=False)
        assert reranker(https_stack, "health").stdout.strip() == f"{https_stack.url}: ready, model test-model"
        token = reranker(https_stack, "token", "--token-only").stdout.strip()
        assert token == (https_stack.state_dir / "token").read_text().strip()
        answer = reranker(https_stack, "query", "q", "first", "second", "--json")
        assert answer.returncode == 0 and answer.stderr == "", answer.stderr
        assert [row["document"] for row in json.loads(answer.stdout)["results"]] == ["first", "second"]
        refused = reranker(https_stack, "query", "q", "doc", "--token", "wrong")
    finally:
        upstream.stop()
    assert refused.returncode == 1
    assert f"reranker: HTTP 401: {https_stack.url} refused the token: pass --token" in refused.stderr
    assert "Traceback" not in refused.stderr
