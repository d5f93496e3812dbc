"""Faults on a running stack: vLLM killed, vLLM hung, the gateway killed. Each must heal without a manual
step, and clients must get a clear 503 JSON with Retry-After meanwhile, never a hang or an empty answer.

One dedicated stack for the module (it is disturbed on purpose), with a short watchdog timeout. Tests run
in file order (gateway kill, vLLM kill, vLLM hang: the last one leaves vLLM restarting) and each one
starts by waiting for the stack to be ready.
A model that cannot load (FATAL with its reason, no restart loop) is covered in test_stack.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from support.stack_runner import RunningStack, minilm_dir, processes_with_env, start_stack

from reranker_template.client.http import body_message

pytestmark = pytest.mark.vllm

WATCHDOG_TIMEOUT = 6  # seconds without a /health answer before the launcher kills vLLM
RESTART_TIMEOUT = 300  # a vLLM restart on a busy 2-core machine, compile cache warm
DOCUMENTS = [f"document number {i} about green tea and other things" for i in range(64)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[RunningStack]:
    running = start_stack(
        tmp_path_factory.mktemp("faults-stack"),
        str(minilm_dir()),
        served_name="minilm",
        extra_env={"WATCHDOG_TIMEOUT": str(WATCHDOG_TIMEOUT), "QUALITY_CHECK": "false"},
        cache_root=vllm_cache_root,
    )
    yield running
    running.stop()


def program_pid(stack: RunningStack, name: str) -> int:
    """The pid supervisord reports for a program (the launcher, for vllm)."""
    out = stack.supervisorctl("pid", name).strip()
    assert out.isdigit() and int(out) > 0, f"{name} is not running: {out!r}\n{stack.supervisorctl('status')}"
    return int(out)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


def vllm_api_pid(stack: RunningStack) -> int:
    """vLLM's API server: the launcher's child."""
    kids = children(program_pid(stack, "vllm"))
    assert len(kids) == 1, kids
    return kids[0]


def health(stack: RunningStack) -> tuple[int, dict]:
    try:
        response = requests.get(stack.gateway_url + "/health", timeout=5)
    except requests.RequestException as exc:
        return 0, {"error": str(exc)}
    return response.status_code, response.json()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, stack: RunningStack) -> float:
    """Seconds until `condition` held; fails after `timeout` with the stack's log tail."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"{what} did not happen within {timeout:.0f} s\n{stack.supervisorctl('status')}\n{stack.log_text()[-4000:]}"
    )


def wait_healthy(stack: RunningStack) -> float:
    return wait_for(lambda: health(stack)[0] == 200, RESTART_TIMEOUT, "/health 200", stack)


def rerank(stack: RunningStack, timeout: float = 60) -> requests.Response:
    return requests.post(
        stack.gateway_url + "/v1/rerank",
        json={"model": "minilm", "query": "green tea", "documents": DOCUMENTS},
        headers={"Authorization": f"Bearer {stack.token}"},
        timeout=timeout,
    )


def assert_clear_answer(response: requests.Response) -> None:
    """200 with every result, or 503 JSON with Retry-After: nothing in between."""
    if response.status_code == 200:
        assert len(response.json()["results"]) == len(DOCUMENTS)
        return
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json")
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body_message(body) and body["status"] in ("loading", "down", "failed"), body


def stack_process_count(stack: RunningStack) -> int:
    return len(processes_with_env("RERANKER_STATE_DIR", str(stack.state_dir)))


def test_killed_gateway_is_restarted_while_vllm_keeps_running(stack: RunningStack) -> None:
    wait_healthy(stack)
    gateway = program_pid(stack, "gateway")
    launcher, api = program_pid(stack, "vllm"), vllm_api_pid(stack)
    os.kill(gateway, signal.SIGKILL)
    back_in = wait_for(lambda: health(stack)[0] == 200, 60, "the gateway answering again", stack)
    wait_for(lambda: stack.supervisorctl("status").count("RUNNING") == 2, 30, "supervisord: both RUNNING", stack)
    assert program_pid(stack, "gateway") != gateway
    assert (program_pid(stack, "vllm"), vllm_api_pid(stack)) == (launcher, api)  # vLLM was not restarted
    assert rerank(stack).status_code == 200
    print(f"gateway back in {back_in:.1f} s")


def test_vllm_sigkill_gives_503_then_heals_by_itself(stack: RunningStack) -> None:
    wait_healthy(stack)
    assert rerank(stack).status_code == 200
    processes_before = stack_process_count(stack)
    gateway_pid = program_pid(stack, "gateway")
    victim = vllm_api_pid(stack)

    # Requests in flight while vLLM dies: each ends with a full answer or a 503 JSON, within its timeout.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        stop_at = time.monotonic() + 8
        futures = [
            pool.submit(lambda: [rerank(stack, timeout=30) for _ in range(1000) if time.monotonic() < stop_at])
            for _ in range(8)
        ]
        time.sleep(2)
        os.kill(victim, signal.SIGKILL)
        down_after = wait_for(lambda: health(stack)[0] == 503, 5, "/health 503 within 5 s of the kill", stack)
        answers = [response for future in futures for response in future.result(timeout=60)]
    assert any(r.status_code == 503 for r in answers), "no request saw vLLM down"
    for response in answers:
        assert_clear_answer(response)

    code, body = health(stack)
    if code == 503:
        assert body["status"] in ("down", "loading"), body
    response = rerank(stack, timeout=10)  # while vLLM restarts: a quick 503, not a wait
    assert_clear_answer(response)

    healed_in = wait_healthy(stack)
    assert rerank(stack).status_code == 200
    assert program_pid(stack, "gateway") == gateway_pid  # the gateway was not touched
    assert vllm_api_pid(stack) != victim
    # No orphans of the killed vLLM (its engine process) left behind.
    wait_for(lambda: stack_process_count(stack) <= processes_before, 30, "the killed vLLM's processes to go", stack)
    # A crash while serving is not a failed load: it never pushes vLLM towards FATAL.
    status = json.loads((stack.state_dir / "vllm-status.json").read_text())
    assert status["phase"] == "ready" and status["load_failures"] == 0, status
    print(
        f"/health 503 {down_after:.1f} s after the kill; vLLM back {healed_in:.0f} s later; "
        f"{sum(r.status_code == 503 for r in answers)} of {len(answers)} requests in flight got 503"
    )


def test_hung_vllm_is_killed_by_the_watchdog_and_restarted(stack: RunningStack) -> None:
    wait_healthy(stack)
    victim = vllm_api_pid(stack)
    launcher = program_pid(stack, "vllm")
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # A request sent to the hung vLLM is not left hanging: the watchdog kill turns it into a 503.
        response = rerank(stack, timeout=WATCHDOG_TIMEOUT + 30)
        assert_clear_answer(response)
        assert response.status_code == 503
        # The watchdog checks every WATCHDOG_TIMEOUT/3 s with a short /health timeout.
        wait_for(
            lambda: not Path(f"/proc/{victim}").exists() or _is_zombie(victim),
            WATCHDOG_TIMEOUT + 15,
            "the watchdog killing the hung vLLM",
            stack,
        )
        killed_in = time.monotonic() - stopped_at
    finally:
        with contextlib.suppress(ProcessLookupError):  # already killed by the watchdog
            os.kill(victim, signal.SIGCONT)
    assert killed_in < WATCHDOG_TIMEOUT + 15
    assert "has not answered /health" in stack.log_text()
    # supervisord starts a new launcher, which starts a new vLLM. (That such a restart reaches /health 200
    # is shown after the SIGKILL above; waiting for it again would cost another minute or two.)
    wait_for(lambda: _new_vllm_started(stack, launcher), 60, "a new launcher starting vLLM", stack)
    print(f"hung vLLM killed {killed_in:.1f} s after SIGSTOP")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _new_vllm_started(stack: RunningStack, old_launcher: int) -> bool:
    try:
        launcher = program_pid(stack, "vllm")
    except AssertionError:
        return False
    return launcher != old_launcher and len(children(launcher)) == 1


def test_too_long_max_length_ends_fatal_with_the_cause(tmp_path: Path, vllm_cache_root: Path) -> None:
    """A flag vLLM refuses at load (MiniLM knows 256 positions): a retry cannot fix it, so the program goes
    FATAL at once, and /health says what to change instead of pydantic's "validation error". (A broken
    model: test_stack.py; the other causes: test_failures.py.)"""
    broken = start_stack(
        tmp_path,
        str(minilm_dir()),
        served_name="minilm",
        wait=False,
        cache_root=vllm_cache_root,
        extra_env={"VLLM_ARGS": "--max-model-len 100000", "QUALITY_CHECK": "false"},
    )
    try:
        wait_for(lambda: "FATAL" in broken.supervisorctl("status", "vllm"), RESTART_TIMEOUT, "vllm FATAL", broken)
        code, body = health(broken)
        assert code == 503 and body["status"] == "failed", body
        assert body["reason"] == (
            "--max-model-len 100000 is more than "
            f"{minilm_dir()} supports (max_position_embeddings=256): set --max-model-len 256 or less in VLLM_ARGS, "
            "or remove it (the plan sets the model's own limit)"
        ), body
        log = broken.log_text()
        assert log.count("[launcher] vLLM cannot serve") == 1 and log.count("starting vLLM:") == 1  # no retry
        assert "not retrying" in log
    finally:
        broken.stop()
