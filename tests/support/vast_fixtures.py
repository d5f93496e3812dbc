"""The fake Vast API and fake gateway as pytest fixtures, for the `reranker vast` test modules.

Loaded as a plugin by tests/conftest.py; a module that defines a fixture of the same name keeps its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fake_vast import FakeGateway, FakeVast, isolated_env


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    """An instance's gateway /health, as `reranker vast` polls it."""
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def fake(gateway: FakeGateway) -> Iterator[FakeVast]:
    """Vast's API on loopback, with instances whose gateway is `gateway`."""
    server = FakeVast(gateway_port=gateway.port).start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeVast) -> dict[str, str]:
    """An isolated HOME and environment that points the vastai SDK at `fake`."""
    return isolated_env(tmp_path, monkeypatch, fake)
