"""Per-model-family vLLM flags, kept as data. (Filled in by the presets issue.)"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Settings
from .flags import Flag
from .modelinfo import ModelInfo


@dataclass(frozen=True)
class PresetChoice:
    name: str | None
    reasons: tuple[str, ...] = ()
    flags: tuple[Flag, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def choose_preset(settings: Settings, model: ModelInfo) -> PresetChoice:
    return PresetChoice(name=None, reasons=("no preset table yet",))
