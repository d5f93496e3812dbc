"""Load through the gateway against the real CPU vLLM: 5,000 rerank requests, 64 at a time.

Every answer must be a complete, checked 200 (or a deliberate 503 JSON with Retry-After, should vLLM be
too busy to answer /health in time), and the gateway's memory and open file descriptors must be the same
before and after: no leak per request or per connection.

The load is `reranker bench`'s own: `run_round` sends the requests from a thread pool through one
`RerankerClient` and checks every answer (`check_response`: count, indices, finite scores, best first).
The client does not retry (retry_for=0), so a 503 counts as an error; a response hook on the client's
session records each status and whether a 503 carried its message and Retry-After.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from support.stack_runner import RunningStack

from reranker_template.client.bench import Tally, Target, Workload, run_round
from reranker_template.client.http import RerankerClient, body_message

pytestmark = pytest.mark.vllm

REQUESTS = 5_000
CONCURRENCY = 64
WARMUP = 2 * CONCURRENCY
TIME_LIMIT = 240.0  # seconds for the 5,000; a failure if the machine is far too slow (pytest-timeout stops a hang)
RSS_SLACK = 24 * 1024 * 1024  # bytes: allocator noise, not a leak (a leak of 5 KB per request is 25 MB)
FD_SLACK = 4
WORKLOAD = Workload(endpoint="rerank", docs=2, doc_tokens=6)


@dataclass
class Statuses:
    """Every HTTP status the gateway answered, and each 503 that was not a deliberate one."""

    counts: collections.Counter[int] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        """A requests response hook: runs in the sending thread for every answer."""
        problem = None
        if response.status_code == 503:
            try:
                message = body_message(response.json())
                retry_after = int(response.headers["Retry-After"])
            except (ValueError, KeyError, TypeError):
                message, retry_after = "", 0
            if not (message and retry_after > 0):
                problem = f"a 503 without message or Retry-After: {response.text[:200]}"
        with self.lock:
            self.counts[response.status_code] += 1
            if problem:
                self.problems.append(problem)


@dataclass(frozen=True)
class Usage:
    rss: int
    fds: int


def usage(pid: int) -> Usage:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Usage(rss=int(fields["VmRSS"].split()[0]) * 1024, fds=len(os.listdir(f"/proc/{pid}/fd")))


def settle(pid: int, seconds: float = 15.0) -> Usage:
    """The gateway's usage once idle connections are gone (vLLM-side keep-alive is 4 s): the minimum fd
    count seen over a few seconds, and the RSS at that moment."""
    best = usage(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = usage(pid)
        if now.fds <= best.fds:
            best = now
    return best


def run_load(stack: RunningStack, count: int) -> tuple[Tally, Statuses]:
    """`count` checked rerank requests, CONCURRENCY at a time, over connections closed at the end."""
    tally, statuses = Tally(), Statuses()
    with RerankerClient(stack.gateway_url, stack.token, timeout=60, retry_for=0, pool_size=CONCURRENCY) as client:
        client.session.hooks["response"].append(statuses.record)
        bodies = WORKLOAD.payloads(count, stack.served_name)
        run_round(Target("gateway", stack.gateway_url, client), WORKLOAD, bodies, CONCURRENCY, tally, lambda: None)
    return tally, statuses


@pytest.mark.timeout(420)
def test_five_thousand_reranks_at_concurrency_64(minilm_stack: RunningStack) -> None:
    pid = int(minilm_stack.supervisorctl("pid", "gateway").strip())
    warm, _ = run_load(minilm_stack, WARMUP)  # pools, caches and buffers reach their working size
    assert not (warm.errors or warm.invalid), warm.first_problem
    before = settle(pid)
    tally, statuses = run_load(minilm_stack, REQUESTS)
    after = settle(pid)
    print(
        f"{REQUESTS} requests in {tally.elapsed:.1f} s ({REQUESTS / tally.elapsed:.0f}/s), "
        f"statuses {dict(statuses.counts)}; gateway RSS {before.rss / 2**20:.1f} -> {after.rss / 2**20:.1f} MiB, "
        f"fds {before.fds} -> {after.fds}"
    )
    assert tally.elapsed < TIME_LIMIT
    assert tally.invalid == 0, tally.first_problem  # every 200 was a complete, correct answer
    assert not statuses.problems, f"{len(statuses.problems)} bad 503s, first: {statuses.problems[:5]}"
    assert sum(statuses.counts.values()) == REQUESTS  # one answer per request: no connection failed
    assert set(statuses.counts) <= {200, 503}, statuses.counts
    assert statuses.counts[200] >= REQUESTS * 0.99, statuses.counts  # a 503 is deliberate, but must be rare
    assert tally.errors == statuses.counts[503], tally.first_problem
    assert after.fds <= before.fds + FD_SLACK, (before, after)
    assert after.rss <= before.rss + RSS_SLACK, (before, after)
    assert int(minilm_stack.supervisorctl("pid", "gateway").strip()) == pid
