"""Reading the user's VLLM_ARGS the way vLLM's own parser does, so their flags always win over ours.

vLLM accepts `--max-model-len 512`, `--max-model-len=512`, `--max_model_len 512` and short aliases
such as `-tp 2`; all of them must count as "the user set --max-model-len / --tensor-parallel-size". A dotted
key (`--pooler-config.logit_mean 3`) counts as the whole option it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

# Short spellings vLLM accepts, mapped to the long option they stand for.
SHORT_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-dp": "--data-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-q": "--quantization",
    "-cc": "--compilation-config",
    "-O": "--optimization-level",  # vLLM 0.32: -O3, -O 3 and -O=3 all mean --optimization-level 3
}

# Options whose presence alone means "on" (they take no value).
BOOLEAN_OPTIONS = {
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
    "--enforce-eager",
    "--trust-remote-code",
    "--disable-custom-all-reduce",
    "--disable-log-stats",
    "--disable-log-requests",
    "--disable-uvicorn-access-log",
    "--enable-chunked-prefill",
    "--no-enable-chunked-prefill",
}


def canonical_option(token: str) -> str | None:
    """`--max_model_len=5` -> `--max-model-len`; `-tp` -> `--tensor-parallel-size`; a value -> None."""
    if not token.startswith("-") or token == "-" or _is_number(token):
        return None
    name = token.split("=", 1)[0]
    if name.startswith("--"):
        # `--pooler-config.logit_mean 3`: vLLM rebuilds the whole --pooler-config from dotted keys, and that
        # replaces any --pooler-config given before it, so a dotted key sets the whole option.
        return "--" + name[2:].split(".", 1)[0].replace("_", "-")
    if name in SHORT_ALIASES:
        return SHORT_ALIASES[name]
    if name.startswith("-O") and len(name) > 2:  # -O3, -O0
        return "--optimization-level"
    return name


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def parse_options(argv: Sequence[str]) -> dict[str, str | None]:
    """Canonical option -> its value (None for a flag without one). The last occurrence wins, as in argparse."""
    found: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        name = canonical_option(token)
        if name is None:
            i += 1
            continue
        value: str | None = None
        if "=" in token and token.startswith("--"):
            value = token.split("=", 1)[1]
        elif token.startswith("-O") and len(token) > 2 and not token.startswith("--"):
            value = token[2:]
        elif name not in BOOLEAN_OPTIONS and i + 1 < len(argv) and canonical_option(argv[i + 1]) is None:
            value = argv[i + 1]
            i += 1
        found[name] = value
        i += 1
    return found


@dataclass(frozen=True)
class UserArgs:
    """The user's VLLM_ARGS (or any vLLM argv), parsed once, with a lookup by canonical option name."""

    argv: tuple[str, ...]
    _options: Mapping[str, str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_options", MappingProxyType(parse_options(self.argv)))

    def options(self) -> Mapping[str, str | None]:
        """Canonical option -> its value (None for a flag without one); read-only."""
        return self._options

    def has(self, *names: str) -> bool:
        return any(name in self._options for name in names)

    def value(self, name: str) -> str | None:
        return self._options.get(name)

    def int_value(self, name: str) -> int | None:
        raw = self.value(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return None
