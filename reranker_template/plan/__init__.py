"""The pure decisions: settings + facts -> the plan (vLLM command, layout, truncation), with a reason per flag.

    from reranker_template.plan import Plan, make_plan

`make_plan` is imported on first use: the gateway and the launcher import `plan.contract` and
`plan.truncation` only, and must not load the preset table and the VLLM_ARGS parser for nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reranker_template.plan.contract import Plan

if TYPE_CHECKING:
    from reranker_template.plan.build import make_plan

__all__ = ["Plan", "make_plan"]


def __getattr__(name: str) -> object:
    if name == "make_plan":
        from reranker_template.plan.build import make_plan

        return make_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
