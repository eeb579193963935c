"""What only the Postgres backend has: its schema and migrations, its connections (durable
commits, reconnecting), and what it says when the server is not there."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from crdt_sync.envelope import seal
from crdt_sync.errors import StoreError, StoreVersionError
from crdt_sync.identity import Identity
from crdt_sync.relay.backend import EnvelopeRow, WriteBatch
from crdt_sync.relay.postgres_schema import SCHEMA_VERSION, TABLES
from crdt_sync.relay.postgres_store import PostgresRelayBackend, PostgresUnavailable, describe
from tests.pg_server import PgServer, start_server

SPACE = "space-a"


@pytest.fixture
def backend(pg_url: str) -> Iterator[PostgresRelayBackend]:
    opened = PostgresRelayBackend(pg_url)
    yield opened
    opened.close()


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


def one_envelope(space: str = SPACE) -> EnvelopeRow:
    env = seal(Identity.generate(), space, 1, b"", 1 << 16, os.urandom(16))
    return EnvelopeRow(env.space, env.author, env.seq, env.hash, env.hlc, env.wire)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- schema ------------------------------------------------------------------------------------
def test_a_new_database_gets_schema_version_2_with_every_relay_table(backend: PostgresRelayBackend,
                                                                    pg_url: str) -> None:
    assert backend.schema_version == SCHEMA_VERSION == 2
    versions = query(pg_url, "SELECT version, name FROM schema_version ORDER BY version")
    assert [v for v, _ in versions] == [1, 2] and "envelopes" in str(versions[0][1])
    assert "snapshot" in str(versions[1][1])
    tables = {t for (t,) in query(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert tables == {*TABLES, "schema_version"}
    PostgresRelayBackend(pg_url).close()  # opening again migrates nothing
    assert len(query(pg_url, "SELECT version FROM schema_version")) == 2


def test_openers_at_once_migrate_once(pg_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        opened = list(pool.map(lambda _: PostgresRelayBackend(pg_url), range(4)))
    try:
        assert {b.schema_version for b in opened} == {SCHEMA_VERSION}
        assert query(pg_url, "SELECT version FROM schema_version ORDER BY version") == [(1,), (2,)]
    finally:
        for b in opened:
            b.close()


def test_a_newer_schema_is_refused_saying_to_upgrade(backend: PostgresRelayBackend, pg_url: str) -> None:
    query(pg_url, f"INSERT INTO schema_version VALUES({SCHEMA_VERSION + 1}, 'from the future', 0)")
    with pytest.raises(StoreVersionError, match=rf"schema version {SCHEMA_VERSION + 1}.*upgrade crdt-sync"):
        PostgresRelayBackend(pg_url)


def test_a_database_of_another_program_is_refused(pg_url: str) -> None:
    query(pg_url, "CREATE TABLE envelopes(x INTEGER)")
    with pytest.raises(StoreError, match=r"not a crdt-sync relay database.*envelopes.*database of its own"):
        PostgresRelayBackend(pg_url)
    assert query(pg_url, "SELECT to_regclass('schema_version')") == [(None,)]  # nothing written


# -- connections -------------------------------------------------------------------------------
def test_commits_are_synchronous_whatever_the_database_default(pg_url: str) -> None:
    name = pg_url.rsplit("/", 1)[1]
    query(pg_url, f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    backend = PostgresRelayBackend(pg_url)
    try:
        assert query(pg_url, "SHOW synchronous_commit") == [("off",)]
        with backend._conn() as conn:
            assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
            assert not conn.info.transaction_status  # autocommit, idle: reads see commits
    finally:
        backend.close()


def test_connections_the_server_dropped_are_replaced(backend: PostgresRelayBackend, pg_url: str) -> None:
    backend.stage(WriteBatch([one_envelope()], [SPACE]))
    backend.commit()
    name = pg_url.rsplit("/", 1)[1]
    killed = query(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           f"WHERE datname='{name}' AND pid <> pg_backend_pid()")
    assert killed and all(ok for (ok,) in killed)
    assert backend.healthy()
    assert backend.spaces() == [SPACE]
    backend.stage(WriteBatch([one_envelope()], ["space-b"]))
    backend.commit()
    assert backend.spaces() == [SPACE, "space-b"]


# -- no server ---------------------------------------------------------------------------------
def test_an_unreachable_server_is_named_without_its_password() -> None:
    port = free_port()
    with pytest.raises(PostgresUnavailable) as caught:
        PostgresRelayBackend(f"postgresql://relay:s3cret@127.0.0.1:{port}/relay", connect_timeout=2)
    message = str(caught.value)
    assert f"postgresql://relay@127.0.0.1:{port}/relay" in message
    assert "check that the server is running" in message and "--store" in message
    assert "s3cret" not in message
    assert isinstance(caught.value, StoreError)


def test_a_url_that_is_not_one_is_refused() -> None:
    with pytest.raises(StoreError, match="not a Postgres URL"):
        PostgresRelayBackend("postgresql://host:notaport:/db?bogus_option=1")
    assert describe("postgresql://u:pw@db.example:5433/relay?sslmode=require") == \
        "postgresql://u@db.example:5433/relay"


def test_a_server_that_goes_away_is_unhealthy_and_says_so() -> None:
    server: PgServer = start_server()  # its own: this test stops it
    try:
        url = server.create_database()
        backend = PostgresRelayBackend(url, connect_timeout=2)
        backend.stage(WriteBatch([one_envelope()], [SPACE]))
        backend.commit()
        assert backend.healthy() and backend.spaces() == [SPACE]
        server.stop()
        assert not backend.healthy()
        with pytest.raises(PostgresUnavailable, match="cannot reach the relay's Postgres"):
            backend.spaces()
        backend.stage(WriteBatch([one_envelope()], ["space-b"]))
        with pytest.raises(PostgresUnavailable):
            backend.commit()
        backend.close()
    finally:
        server.stop()
