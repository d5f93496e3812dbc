"""Prometheus metrics of the gateway itself; /metrics serves them followed by vLLM's own.

Route labels come from a fixed list (anything else is "other"), so a scanner probing random paths cannot
blow up the number of time series.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

KNOWN_ROUTES = frozenset(
    {
        "/",
        "/health",
        "/ping",
        "/metrics",
        "/docs",
        "/openapi.json",
        "/version",
        "/load",
        "/v1/rerank",
        "/v2/rerank",
        "/rerank",
        "/v1/score",
        "/score",
        "/pooling",
        "/classify",
        "/tokenize",
        "/detokenize",
        "/invocations",
        "/v1/models",
        "/v1/embeddings",
    }
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def route_label(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith("/_gateway/"):
        return "/_gateway"
    return "other"


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "reranker_gateway_requests", "Requests answered by the gateway", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "reranker_gateway_request_duration_seconds",
            "Time from request received to response sent, including vLLM's time",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_up = Gauge(
            "reranker_gateway_upstream_up", "1 when vLLM answers its /health", registry=self.registry
        )
        self.upstream_errors = Counter(
            "reranker_gateway_upstream_errors", "Proxied requests that could not reach vLLM", registry=self.registry
        )
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        children = self._children.get(key)
        if children is None:  # label lookups are the slow part; cache them per (path, status)
            route = route_label(path)
            children = (self.requests.labels(route, str(status)), self.latency.labels(route))
            if len(self._children) < 4096:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
