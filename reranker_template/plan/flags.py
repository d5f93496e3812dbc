"""A vLLM flag we chose, with the reason we chose it (shown by `reranker plan`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Flag:
    option: str  # canonical long form, e.g. "--max-model-len"
    value: str | None  # None for a flag without a value
    reason: str

    def argv(self) -> list[str]:
        return [self.option] if self.value is None else [self.option, self.value]
