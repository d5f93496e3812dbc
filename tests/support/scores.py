"""Scores through the stack's gateway, the 1e-3 comparison with a reference, and a causal LM to compute one with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.stack_runner import RunningStack, http_post_json

TOLERANCE = 1e-3


def served_scores(stack: RunningStack, query: str, documents: list[str], **extra: Any) -> list[float]:
    """/v1/score through the gateway, in the documents' order."""
    status, body = http_post_json(
        stack.gateway_url + "/v1/score",
        {"model": stack.served_name, "text_1": query, "text_2": documents, **extra},
        token=stack.token,
    )
    assert status == 200, body
    return [item["score"] for item in sorted(body["data"], key=lambda item: item["index"])]


def assert_close(served: list[float], reference: list[float]) -> None:
    """Within 1e-3 of the reference, and the reference spread enough that the comparison proves something."""
    worst = max(abs(a - b) for a, b in zip(served, reference, strict=True))
    assert worst < TOLERANCE, f"served {served} vs reference {reference} (max difference {worst:.2e})"
    assert max(reference) - min(reference) > 0.05, (
        f"the scores hardly differ ({reference}): the comparison would prove little"
    )


class CausalLM:
    """A causal LM's last-position logits for a token sequence, run with transformers in float32."""

    def __init__(self, directory: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def last_logits(self, ids: list[int]) -> Any:
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0, -1]

    def token(self, token: str) -> int:
        return int(self.tokenizer.convert_tokens_to_ids(token))
