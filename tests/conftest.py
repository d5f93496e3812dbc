"""Shared fixtures. Real vLLM servers are expensive (about a minute each on 2 cores): share them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_runner import RunningStack, minilm_dir, start_stack


@pytest.fixture(scope="session")
def vllm_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One vLLM compile cache for the whole session: the second start of a model skips its warm-up."""
    return tmp_path_factory.mktemp("vllm-cache")


@pytest.fixture(scope="session")
def minilm_stack(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[RunningStack]:
    """The whole stack (supervisord, launcher, real CPU vLLM, gateway) serving the real all-MiniLM-L6-v2.

    Shared by every module: tests against it must not change its state (no kills, no restarts).
    """
    stack = start_stack(
        tmp_path_factory.mktemp("minilm-stack"), str(minilm_dir()), served_name="minilm", cache_root=vllm_cache_root
    )
    yield stack
    stack.stop()
