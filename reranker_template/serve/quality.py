"""The boot-time known-answer check: do relevant documents outrank irrelevant ones?

A reranker served with the wrong flags (Qwen3-Reranker without its template, a wrong preset) starts,
answers 200 and returns meaningless scores. A handful of obvious (query, relevant, irrelevant)
triples in several languages catches that in about a second, so /health can say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from reranker_template.client import RerankerClient, RerankerError
from reranker_template.plan.contract import Plan
from reranker_template.serve.status import QualityState
from reranker_template.settings import Settings

log = logging.getLogger("reranker.quality")
# Seconds per scoring call; vLLM on loopback answers these pairs in well under a second once it is ready.
SCORE_TIMEOUT = 30.0

# (language, query, relevant document, irrelevant document)
TRIPLES: tuple[tuple[str, str, str, str], ...] = (
    (
        "en",
        "What is the capital of France?",
        "Paris is the capital and largest city of France.",
        "Basketball is a popular sport in the United States.",
    ),
    (
        "en",
        "What are the health benefits of green tea?",
        "Green tea contains antioxidants that may reduce inflammation and protect cells.",
        "The stock market closed lower on Friday after weak earnings reports.",
    ),
    (
        "en",
        "How do I bake bread at home?",
        "To bake bread, mix flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
        "The Pacific Ocean is the largest ocean on Earth.",
    ),
    (
        "de",
        "Wie hoch ist der Eiffelturm?",
        "Der Eiffelturm in Paris ist etwa 330 Meter hoch.",
        "Kartoffeln werden in vielen Ländern als Grundnahrungsmittel angebaut.",
    ),
    (
        "fr",
        "Quelle est la capitale de l'Italie ?",
        "Rome est la capitale de l'Italie.",
        "Le football est un sport très populaire en Europe.",
    ),
    (
        "es",
        "¿Qué comen los gatos?",
        "Los gatos son carnívoros y comen principalmente carne y pescado.",
        "El tren de alta velocidad conecta Madrid con Barcelona.",
    ),
    ("zh", "中国的首都是哪里？", "北京是中华人民共和国的首都。", "篮球是一项受欢迎的运动。"),
)
# Share of triples that must be ordered right. Not 100%: an English-only model (all-MiniLM) may miss a
# language it was never trained on, while a model with broken flags orders about half of them by chance.
PASS_SHARE = 0.85


@dataclass(frozen=True)
class QualityOutcome:
    state: QualityState
    detail: str


def judge(scores: Mapping[int, float]) -> QualityOutcome:
    """scores[i] for i in 0..2n-1: relevant of triple k at 2k, irrelevant at 2k+1."""
    wrong = [TRIPLES[k][0] + ": " + TRIPLES[k][1] for k in range(len(TRIPLES)) if not scores[2 * k] > scores[2 * k + 1]]
    right = len(TRIPLES) - len(wrong)
    summary = f"{right}/{len(TRIPLES)} known-answer pairs ranked correctly"
    if right >= PASS_SHARE * len(TRIPLES):
        return QualityOutcome(QualityState.PASSED, summary)
    return QualityOutcome(QualityState.FAILED, summary + "; wrong for " + "; ".join(wrong))


def score_triples(base_url: str, model: str, timeout: float = SCORE_TIMEOUT) -> dict[int, float]:
    """One /v1/score call per triple (query vs. its two documents), straight to vLLM on loopback: no token,
    and no retries (`retry_for=0`), so a vLLM that is gone fails the check at once instead of stalling it."""
    scores: dict[int, float] = {}
    with RerankerClient(base_url, model=model, timeout=timeout, retry_for=0) as client:
        for k, (_, query, relevant, irrelevant) in enumerate(TRIPLES):
            relevant_score, irrelevant_score = client.score(query, [relevant, irrelevant]).scores
            scores[2 * k], scores[2 * k + 1] = relevant_score, irrelevant_score
    return scores


def likely_cause(plan: Plan) -> str:
    """The most probable reason for a failed check, from the plan that started vLLM (one sentence)."""
    preset = plan.preset
    if plan.yes_no_scoring and not plan.score_template:
        return (
            "the score template is missing: this model scores yes/no in its authors' prompt format, and vLLM "
            "without --chat-template scores the bare text. Remove --hf-overrides from VLLM_ARGS "
            "(or RERANKER_PRESET=none) so the preset adds both, or pass the template with --chat-template"
        )
    if preset is None:
        return (
            "no preset matched this model (or RERANKER_PRESET=none): if it is a known reranker family, set "
            "RERANKER_PRESET=<name> (reranker plan lists them); if it is not a reranker, its scores mean little"
        )
    if preset == "embedding":
        return "this is an embedding model scored by cosine similarity: for reranking, serve a reranker"
    return (
        f"preset {preset!r} may not fit this checkpoint (a wrong RERANKER_PRESET, a fine-tune with another prompt "
        "format, or a VLLM_ARGS flag that overrides the preset's)"
    )


def run_quality_check(settings: Settings, plan: Plan) -> QualityOutcome:
    if not settings.quality_check:
        return QualityOutcome(QualityState.SKIPPED, "QUALITY_CHECK=false")
    base_url = f"http://127.0.0.1:{plan.vllm_port}"
    try:
        outcome = judge(score_triples(base_url, plan.served_model_name))
    except (RerankerError, KeyError, TypeError, ValueError) as exc:  # unreachable, refused, or an odd answer
        return QualityOutcome(QualityState.SKIPPED, f"could not score the known-answer pairs: {exc}")
    if outcome.state is QualityState.FAILED:
        cause = likely_cause(plan)
        outcome = QualityOutcome(QualityState.FAILED, f"{outcome.detail}. Likely cause: {cause}")
        log.warning(
            "WARNING: relevant documents do NOT outrank irrelevant ones; the scores are probably meaningless. %s",
            outcome.detail,
        )
    else:
        log.info("%s", outcome.detail)
    return outcome
