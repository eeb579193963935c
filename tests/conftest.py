"""Shared fixtures: replicas on real data directories under pytest's tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from crdt_sync import Replica
from tests.conformance.harness import make_big_template

# Store tests do real SQLite and file I/O per example: no per-example deadline (a slow CI
# disk is not a bug), and the data is generated cheaply, so "too slow" is not meaningful.
settings.register_profile("store", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("store")

ReplicaFactory = Callable[..., Replica]


@pytest.fixture
def open_replica(tmp_path: Path) -> Iterator[ReplicaFactory]:
    """``open_replica(name, **kwargs)`` opens a Replica on ``tmp_path/name``; all are closed
    at teardown (close is idempotent, so tests may close or reopen freely)."""
    opened: list[Replica] = []

    def factory(name: str = "r", **kwargs: Any) -> Replica:
        replica = Replica(tmp_path / name, **kwargs)
        opened.append(replica)
        return replica

    yield factory
    for replica in opened:
        replica.close()


@pytest.fixture
def replica(open_replica: ReplicaFactory) -> Replica:
    return open_replica("main")


@pytest.fixture(scope="session")
def big_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two closed data directories, ``a`` holding ``BIG_COUNT`` envelopes of its own in a space
    it shares with ``b`` (``make_big_template``), made once per run; a test copies them
    (``copy_big_template``), never opens them in place."""
    return make_big_template(tmp_path_factory.mktemp("big") / "template")
