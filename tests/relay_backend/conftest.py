"""Fixtures of the relay backend tests: a real Postgres server for the session
(:mod:`tests.pg_server`), a fresh database per test, and ``open_backend``, which opens
backend objects of one kind (``sqlite`` or ``postgres``) on one fresh store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crdt_sync.relay.backend import RelayBackend
from tests.external_servers import start_or_skip
from tests.pg_server import PgServer, PgUnavailable, find_bin_dir, start_server

#: Opens one more backend object (one connection's worth) on the test's store.
OpenBackend = Callable[[], RelayBackend]
KINDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One Postgres server for the whole run, started on first use, stopped at the end.
    Without Postgres binaries this skips, except under CI (CI=true), where it fails."""
    server = start_or_skip(start_server, installed=find_bin_dir() is not None,
                           missing="no Postgres server binaries (apt-get install postgresql)",
                           unavailable=PgUnavailable)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a new, empty database (dropped after the test)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenBackend]:
    """``open_backend()`` opens a backend object of ``kind`` on this test's store (each call
    one more object, as RelayStore opens a writer's and a reader's); all are closed after."""
    opened: list[RelayBackend] = []
    if kind == "sqlite":
        from crdt_sync.relay.sqlite_store import SqliteRelayBackend

        def make() -> RelayBackend:
            return SqliteRelayBackend(tmp_path)
    else:
        from crdt_sync.relay.postgres_store import PostgresRelayBackend

        url = request.getfixturevalue("pg_url")

        def make() -> RelayBackend:
            return PostgresRelayBackend(url)

    def opener() -> RelayBackend:
        backend = make()
        opened.append(backend)
        return backend

    yield opener
    for backend in opened:
        backend.close()
