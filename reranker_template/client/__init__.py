"""The user's side of an endpoint: a typed HTTP client, the benchmark and offline scoring.

`from reranker_template.client import RerankerClient` is the public entry point.
"""

from reranker_template.client.http import (
    Health,
    ModelCard,
    RerankerClient,
    RerankHit,
    RerankResult,
    ScoreResult,
)
from reranker_template.errors import NotReadyError, RerankerError

__all__ = [
    "Health",
    "ModelCard",
    "NotReadyError",
    "RerankHit",
    "RerankResult",
    "RerankerClient",
    "RerankerError",
    "ScoreResult",
]
