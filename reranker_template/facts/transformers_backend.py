"""Whether vLLM's Transformers backend could serve an architecture vLLM has no implementation of (observed).

vLLM falls back to the model's class in the transformers library when the class exists there and can use
vLLM's attention (vllm/model_executor/models/registry.py `_try_resolve_transformers`: `is_backend_compatible()`
or `_can_set_attn_implementation()`). Asking means importing transformers and the model class, seconds of
work and memory the long-lived launcher should not keep, so it is asked in a child interpreter, and only for
an architecture missing from vLLM's own table (plan/vllm_models.py), which is rare.
"""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
try:
    import transformers
except ImportError:
    print("absent"); sys.exit(0)
cls = getattr(transformers, sys.argv[1], None)
if cls is None:
    print("no-class"); sys.exit(0)
try:
    ok = cls.is_backend_compatible() or cls._can_set_attn_implementation()
except Exception:
    ok = False
print("yes" if ok else "no")
"""


def transformers_backend_serves(architecture: str, timeout: float = 120.0) -> bool | None:
    """True: transformers has the class and vLLM's Transformers backend can use it; False: it cannot (no such
    class, or not compatible); None: unknown (transformers is not installed here, or the probe failed)."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, architecture],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    answer = result.stdout.strip().splitlines()[-1:] if result.returncode == 0 else []
    return {"yes": True, "no": False, "no-class": False}.get(answer[0]) if answer else None
