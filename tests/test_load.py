"""Load through the gateway against the real CPU vLLM: 5,000 rerank requests, 64 at a time.

Every answer must be a complete 200 (or a deliberate 503 JSON with Retry-After, should vLLM be too busy
to answer /health in time), and the gateway's memory and open file descriptors must be the same before
and after: no leak per request or per connection.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from support.stack_runner import RunningStack

pytestmark = pytest.mark.vllm

REQUESTS = 5_000
CONCURRENCY = 64
WARMUP = 2 * CONCURRENCY
TIME_LIMIT = 240.0  # seconds for the 5,000; a failure, not a hang, if the machine is far too slow
RSS_SLACK = 24 * 1024 * 1024  # bytes: allocator noise, not a leak (a leak of 5 KB per request is 25 MB)
FD_SLACK = 4
DOCUMENTS = ["green tea is healthy", "basketball is a sport"]


@dataclass
class Tally:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Usage:
    rss: int
    fds: int


def usage(pid: int) -> Usage:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Usage(rss=int(fields["VmRSS"].split()[0]) * 1024, fds=len(os.listdir(f"/proc/{pid}/fd")))


async def settle(pid: int, seconds: float = 15.0) -> Usage:
    """The gateway's usage once idle connections are gone (vLLM-side keep-alive is 4 s): the minimum fd
    count seen over a few seconds, and the RSS at that moment."""
    best = usage(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = usage(pid)
        if now.fds <= best.fds:
            best = now
    return best


async def run_load(stack: RunningStack, count: int, tally: Tally) -> float:
    url = stack.gateway_url + "/v1/rerank"
    headers = {"Authorization": f"Bearer {stack.token}"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = {"model": "minilm", "query": f"green tea {i}", "documents": DOCUMENTS}
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    tally.statuses[response.status] += 1
                    data = await response.json(content_type=None)
                    if response.status == 200:
                        if sorted(r["index"] for r in data["results"]) != [0, 1]:
                            tally.problems.append(f"request {i}: incomplete answer {data}")
                    elif response.status == 503:
                        if not (data["error"]["message"] and int(response.headers["Retry-After"]) > 0):
                            tally.problems.append(f"request {i}: 503 without message or Retry-After")
                    else:
                        tally.problems.append(f"request {i}: {response.status} {data}")
            except (TimeoutError, aiohttp.ClientError, ValueError, KeyError) as exc:
                tally.problems.append(f"request {i}: {type(exc).__name__}: {exc}")

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.wait_for(asyncio.gather(*(worker(session) for _ in range(CONCURRENCY))), TIME_LIMIT)
    return time.monotonic() - started


@pytest.mark.timeout(420)
def test_five_thousand_reranks_at_concurrency_64(minilm_stack: RunningStack) -> None:
    pid = int(minilm_stack.supervisorctl("pid", "gateway").strip())

    async def scenario() -> tuple[Usage, Usage, float, Tally]:
        warm = Tally()
        await run_load(minilm_stack, WARMUP, warm)  # pools, caches and buffers reach their working size
        assert not warm.problems, warm.problems[:5]
        before = await settle(pid)
        tally = Tally()
        took = await run_load(minilm_stack, REQUESTS, tally)
        after = await settle(pid)
        return before, after, took, tally

    before, after, took, tally = asyncio.run(scenario())
    print(
        f"{REQUESTS} requests in {took:.1f} s ({REQUESTS / took:.0f}/s), statuses {dict(tally.statuses)}; "
        f"gateway RSS {before.rss / 2**20:.1f} -> {after.rss / 2**20:.1f} MiB, fds {before.fds} -> {after.fds}"
    )
    assert not tally.problems, f"{len(tally.problems)} problems, first: {tally.problems[:5]}"
    assert sum(tally.statuses.values()) == REQUESTS
    assert tally.statuses[200] >= REQUESTS * 0.99, tally.statuses  # a 503 is deliberate, but must be rare
    assert after.fds <= before.fds + FD_SLACK, (before, after)
    assert after.rss <= before.rss + RSS_SLACK, (before, after)
    assert int(minilm_stack.supervisorctl("pid", "gateway").strip()) == pid
