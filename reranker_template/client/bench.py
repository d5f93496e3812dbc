"""`reranker bench`: load an endpoint at several concurrency levels and check every answer.

Why checked: a fast wrong answer is worse than a slow right one, so every response is validated
(right count, sorted best first, indices valid, finite scores) and failures are counted, not hidden.
With a second URL (`compare`), the same load runs against both in alternating rounds, so noise from
other work on the machine hits both about equally; the ratio is how the gateway's cost is measured.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from reranker_template.client.http import RerankerClient
from reranker_template.errors import RerankerError

# Plain words that most tokenizers keep whole, so a document of N words is about N tokens.
WORD_LIST = """
the of and to in is that for it as was with be by on not he this are or his from at which but have an
they you were her she there one all we their been has when who will more no if out so said what up its
about into than them can only other new some could time these two may then do first any my now such like
our over man me even most made after also did many before must through back years where much your way
well down should because each just those people how too little state good very make world still own see
men work long get here between both life being under never day same another know while last might us
great old year off come since against go came right used take three water tea green health city river
music history science
"""
WORDS = WORD_LIST.split()
QUERIES = (
    "what are the health benefits of green tea",
    "how did the city grow along the river",
    "why does music change with history",
    "what work do people do in the old city",
)
ROUNDS = 2  # rounds per target and level when comparing (A B A B): both see the same noise


@dataclass(frozen=True)
class Workload:
    endpoint: str  # "rerank" or "score"
    docs: int
    doc_tokens: int
    seed: int = 0

    def payloads(self, count: int, model: str | None) -> list[dict[str, Any]]:
        """`count` different requests, generated before timing starts (same seed, same requests)."""
        rng = random.Random(self.seed)
        bodies = []
        for i in range(count):
            query = QUERIES[i % len(QUERIES)]
            documents = [" ".join(rng.choice(WORDS) for _ in range(self.doc_tokens)) for _ in range(self.docs)]
            body: dict[str, Any] = (
                {"query": query, "documents": documents}
                if self.endpoint == "rerank"
                else {"text_1": query, "text_2": documents}
            )
            if model:
                body["model"] = model
            bodies.append(body)
        return bodies

    @property
    def path(self) -> str:
        return "/v1/rerank" if self.endpoint == "rerank" else "/v1/score"


def check_response(endpoint: str, data: dict[str, Any], docs: int) -> str | None:
    """None when the answer is right for a request with `docs` documents, else what is wrong."""
    if endpoint == "rerank":
        results = data.get("results")
        if not isinstance(results, list):
            return "no results list"
        if len(results) != docs:
            return f"{len(results)} results for {docs} documents"
        try:
            indices = [int(r["index"]) for r in results]
            scores = [float(r["relevance_score"]) for r in results]
        except (KeyError, TypeError, ValueError):
            return "a result without index or relevance_score"
        if sorted(indices) != list(range(docs)):
            return f"indices are not 0..{docs - 1} each once: {indices}"
        if not all(math.isfinite(s) for s in scores):
            return "a score is not a finite number"
        if any(a < b for a, b in zip(scores, scores[1:], strict=False)):
            return "results are not sorted best first"
        return None
    items = data.get("data")
    if not isinstance(items, list):
        return "no data list"
    if len(items) != docs:
        return f"{len(items)} scores for {docs} documents"
    try:
        indices = sorted(int(item["index"]) for item in items)
        scores = [float(item["score"]) for item in items]
    except (KeyError, TypeError, ValueError):
        return "an item without index or score"
    if indices != list(range(docs)):
        return f"indices are not 0..{docs - 1} each once"
    if not all(math.isfinite(s) for s in scores):
        return "a score is not a finite number"
    return None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), like numpy's default; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Tally:
    """What one target saw at one concurrency level (summed over its rounds)."""

    latencies: list[float] = field(default_factory=list)  # seconds, successful and checked requests only
    errors: int = 0  # HTTP errors and unreachable
    invalid: int = 0  # answered 200 but wrong
    elapsed: float = 0.0  # wall time of the rounds
    first_problem: str | None = None

    def problem(self, message: str) -> None:
        if self.first_problem is None:
            self.first_problem = message


@dataclass(frozen=True)
class LevelResult:
    target: str  # "primary" or "compare"
    url: str
    concurrency: int
    requests: int
    ok: int
    errors: int
    invalid: int
    seconds: float
    requests_per_s: float
    pairs_per_s: float
    latency_ms_p50: float | None  # None when no request succeeded (JSON has no NaN)
    latency_ms_p95: float | None
    latency_ms_p99: float | None
    latency_ms_mean: float | None
    first_problem: str | None

    @classmethod
    def from_tally(cls, target: str, url: str, concurrency: int, docs: int, tally: Tally) -> LevelResult:
        ok = len(tally.latencies)
        rate = ok / tally.elapsed if tally.elapsed > 0 else 0.0
        ms = [x * 1000 for x in tally.latencies]
        return cls(
            target=target,
            url=url,
            concurrency=concurrency,
            requests=ok + tally.errors + tally.invalid,
            ok=ok,
            errors=tally.errors,
            invalid=tally.invalid,
            seconds=round(tally.elapsed, 3),
            requests_per_s=round(rate, 2),
            pairs_per_s=round(rate * docs, 1),
            latency_ms_p50=_ms(percentile(ms, 50)),
            latency_ms_p95=_ms(percentile(ms, 95)),
            latency_ms_p99=_ms(percentile(ms, 99)),
            latency_ms_mean=_ms(sum(ms) / len(ms) if ms else math.nan),
            first_problem=tally.first_problem,
        )


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 1)


@dataclass(frozen=True)
class Comparison:
    concurrency: int
    requests_per_s_ratio: float | None  # compare / primary
    latency_p50_ratio: float | None
    latency_p50_delta_ms: float | None  # compare minus primary


def compare(primary: LevelResult, other: LevelResult) -> Comparison:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    p50, other_p50 = primary.latency_ms_p50, other.latency_ms_p50
    return Comparison(
        concurrency=primary.concurrency,
        requests_per_s_ratio=ratio(other.requests_per_s, primary.requests_per_s),
        latency_p50_ratio=ratio(other_p50, p50),
        latency_p50_delta_ms=round(other_p50 - p50, 1) if p50 is not None and other_p50 is not None else None,
    )


@dataclass(frozen=True)
class BenchConfig:
    url: str
    token: str | None
    workload: Workload
    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int | None = None  # per level and target; None: max(16, 4 x concurrency)
    compare_url: str | None = None
    compare_token: str | None = None  # None: the primary's token
    warmup: int = 4
    timeout: float = 120.0
    # Certificate checks, as RerankerClient takes them: False for our own stack's self-signed HTTPS.
    verify: bool | str = True
    compare_verify: bool | str = True
    # A Vast Serverless endpoint's name instead of a URL (`url` is then only its label), and the
    # environment its Vast API key and base URLs come from.
    serverless: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def requests_for(self, concurrency: int) -> int:
        return self.requests if self.requests else max(16, 4 * concurrency)


@dataclass
class Target:
    name: str
    url: str
    client: RerankerClient


def run_round(
    target: Target,
    workload: Workload,
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    tally: Tally,
    advance: Callable[[], None],
) -> None:
    """Send `bodies` with `concurrency` workers; record latency of each checked answer."""
    lock = threading.Lock()

    def one(body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            data = target.client.request_json("POST", workload.path, body)
        except RerankerError as exc:
            with lock:
                tally.errors += 1
                tally.problem(str(exc))
            advance()
            return
        took = time.perf_counter() - started
        wrong = check_response(workload.endpoint, data, workload.docs)
        with lock:
            if wrong:
                tally.invalid += 1
                tally.problem(wrong)
            else:
                tally.latencies.append(took)
        advance()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, bodies))
    tally.elapsed += time.perf_counter() - started


def split(items: Sequence[Any], parts: int) -> list[Sequence[Any]]:
    size = math.ceil(len(items) / parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_bench(config: BenchConfig, model: str | None, advance: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Warm up, then every concurrency level (alternating rounds per target). Returns the JSON report."""
    targets = [Target("primary", config.url, _client(config, config.url, config.token, config.verify))]
    if config.compare_url:
        token = config.compare_token if config.compare_token is not None else config.token
        targets.append(
            Target("compare", config.compare_url, _client(config, config.compare_url, token, config.compare_verify))
        )
    workload = config.workload
    try:
        for target in targets:  # warm-up: connections, caches, first-request compilation
            warm = Tally()
            run_round(
                target, workload, workload.payloads(config.warmup, model), min(config.warmup, 4), warm, lambda: None
            )
            if warm.errors or warm.invalid:
                raise RerankerError(f"warm-up against {target.url} failed: {warm.first_problem}")

        results: list[LevelResult] = []
        comparisons: list[Comparison] = []
        for level in config.concurrency:
            bodies = workload.payloads(config.requests_for(level), model)
            rounds = ROUNDS if len(targets) > 1 and len(bodies) >= 2 * ROUNDS else 1
            tallies = {t.name: Tally() for t in targets}
            for chunk in split(bodies, rounds):
                for target in targets:
                    run_round(target, workload, chunk, level, tallies[target.name], advance)
            level_results = [
                LevelResult.from_tally(t.name, t.url, level, workload.docs, tallies[t.name]) for t in targets
            ]
            results.extend(level_results)
            if len(level_results) == 2:
                comparisons.append(compare(level_results[0], level_results[1]))
    finally:
        for target in targets:
            target.client.close()

    return {
        "config": {
            "url": config.url,
            "compare_url": config.compare_url,
            "endpoint": workload.endpoint,
            "model": model,
            "docs": workload.docs,
            "doc_tokens": workload.doc_tokens,
            "concurrency": list(config.concurrency),
            "requests": {str(c): config.requests_for(c) for c in config.concurrency},
            "warmup": config.warmup,
        },
        "results": [asdict(r) for r in results],
        "comparisons": [asdict(c) for c in comparisons],
    }


def _client(config: BenchConfig, url: str, token: str | None, verify: bool | str) -> RerankerClient:
    """No retries (a failure counts), one pooled connection per worker of the highest level. A serverless
    endpoint is reached through Vast's router, whose re-routing on 429/5xx is part of what is measured."""
    if config.serverless and url == config.url:
        return RerankerClient.for_serverless(config.serverless, config.env, timeout=config.timeout)
    pool = max(config.concurrency)
    return RerankerClient(url, token, timeout=config.timeout, retry_for=0, pool_size=pool, verify=verify)


def total_requests(config: BenchConfig) -> int:
    targets = 2 if config.compare_url else 1
    return sum(config.requests_for(c) for c in config.concurrency) * targets
