"""The serverless workload measure: about how many tokens a request makes the model read.

Vast's autoscaler compares what clients say a request costs (`cost`) with what each worker measured it
can do per second (`max_perf`, from the worker's benchmark), and scales on the ratio. Both numbers only
mean something if the worker and every client count a request the same way, so this module is the one
function both use (serve/worker.py, client/serverless.py).

Rule: a reranker reads one (query, document) pair per document, so a rerank or score call costs the sum
over its pairs of query tokens + document tokens. Tokens are estimated as characters / 4 (English text
averages about 4 characters per token in BPE vocabularies; an exact count would need the model's
tokenizer on every client). An image (jina-reranker-m0) counts IMAGE_TOKENS. A request costs at least 1.
"""

from __future__ import annotations

import math
from typing import Any

CHARS_PER_TOKEN = 4
# A 448x448 image in Qwen2-VL-style encoders, which jina-reranker-m0 is, is about 256 visual tokens.
IMAGE_TOKENS = 256
# Field pairs that hold the two sides of a request: rerank, score (vLLM 0.32's names and the older ones).
PAIR_FIELDS = (("query", "documents"), ("queries", "documents"), ("text_1", "text_2"), ("data_1", "data_2"))


def item_tokens(item: Any) -> int:
    """Estimated tokens of one query or document: text, {"text": ...}, multimodal content, or an image."""
    if isinstance(item, str):
        return max(1, math.ceil(len(item) / CHARS_PER_TOKEN))
    if isinstance(item, dict):
        if isinstance(item.get("text"), str):
            return item_tokens(item["text"])
        content = item.get("content")
        if isinstance(content, list) and content:
            return sum(item_tokens(part) for part in content)
    return IMAGE_TOKENS


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def request_workload(payload: Any) -> float:
    """The workload of one rerank or score body (see the module docstring); 1.0 for anything else."""
    if not isinstance(payload, dict):
        return 1.0
    for first, second in PAIR_FIELDS:
        if first in payload and second in payload:
            left, right = _items(payload[first]), _items(payload[second])
            if len(left) == 1:
                pairs = [(left[0], item) for item in right]
            elif len(left) == len(right):
                pairs = list(zip(left, right, strict=True))
            else:  # vLLM refuses this shape; count every item once so a cost is still defined
                return float(max(1, sum(item_tokens(item) for item in left + right)))
            return float(max(1, sum(item_tokens(a) + item_tokens(b) for a, b in pairs)))
    return 1.0
