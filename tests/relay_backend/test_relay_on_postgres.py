"""A relay whose store is Postgres (``store = postgresql://...``): devices sync through it and
converge, its state is in the database (a restarted relay keeps its identity and envelopes),
and the setting comes from the CLI, the environment or the TOML file like every other."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import psycopg
import pytest

from crdt_sync.protocol import ErrorCode
from crdt_sync.relay.config import ConfigError, load_config
from crdt_sync.relay.postgres_store import READ_WAIT, PostgresRelayBackend
from crdt_sync.relay.sqlite_store import SqliteRelayBackend
from crdt_sync.relay.storage import RelayStore
from tests.conftest import ReplicaFactory
from tests.helpers import share
from tests.pg_server import start_server
from tests.relay_helpers import (
    http_get,
    relay_process,
    run_cli,
    running_relay,
    sync_once,
    sync_until_converged,
)
from tests.sync_helpers import WAIT, fill, snapshot


def stored_envelopes(url: str, space: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT COUNT(*) FROM envelopes WHERE space=%s", (space,)).fetchone()
    assert row is not None
    return int(row[0])


async def test_two_devices_converge_through_a_relay_on_postgres(tmp_path: Path, pg_url: str,
                                                                open_replica: ReplicaFactory) -> None:
    office, tablet = open_replica("office"), open_replica("tablet")
    space = share(office, tablet)
    fill(office, "office", 4, space)
    fill(tablet, "tablet", 3, space)
    async with running_relay(tmp_path / "relay", store=pg_url) as relay:
        assert isinstance(relay.store.store, PostgresRelayBackend)
        assert isinstance(relay.store.reader, PostgresRelayBackend)
        assert await sync_until_converged([office, tablet], relay.url, space) == 2
        assert snapshot(office, space).key() == snapshot(tablet, space).key()
        assert office.space(space).get("equipment", "tablet-2") == {"n": 2, "by": "tablet"}
        assert tablet.space(space).get("equipment", "office-3") == {"n": 3, "by": "office"}
        vv = office.version_vector(space)
        assert relay.store.version_vector(space) == vv
        relay_id = relay.device_id
    assert stored_envelopes(pg_url, space) == sum(vv.values())
    assert not (tmp_path / "relay" / "relay" / "store.sqlite3").exists()  # nothing went to SQLite

    # Restarted on the same database: the same relay, holding everything; a new device
    # that joins gets it all from Postgres.
    late = open_replica("late")
    space_late = share(office, late)
    assert space_late == space
    async with running_relay(tmp_path / "relay", store=pg_url) as relay:
        assert relay.device_id == relay_id
        assert relay.store.version_vector(space) == vv
        outcome = await sync_once(office, relay.url)  # office uploads the grant to late
        assert outcome.synced and outcome.ok, outcome.closed
        outcome = await sync_once(late, relay.url)
        assert outcome.synced and outcome.ok, outcome.closed
        assert late.space(space).get("equipment", "tablet-0") == {"n": 0, "by": "tablet"}
        assert snapshot(late, space).key() == snapshot(office, space).key()


async def test_a_postgres_restart_refuses_writes_then_recovers_losing_nothing(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    """Postgres goes down under a running relay: a device's push is not acknowledged, the
    relay stays up; Postgres comes back: the same relay takes the push, and both devices
    converge with nothing lost."""
    server = start_server()  # its own: this test stops it
    try:
        url = server.create_database("restart")
        office, tablet = open_replica("office"), open_replica("tablet")
        space = share(office, tablet)
        fill(office, "office", 3, space)
        async with running_relay(tmp_path / "relay", store=url) as relay:
            assert await sync_until_converged([office, tablet], relay.url, space) == 1
            held = sum(office.version_vector(space).values())
            server.halt()
            fill(office, "down", 2, space)
            # Nothing is acknowledged while the database is down, and the relay says why: a
            # read waits at most READ_WAIT (1 s) for a connection, then FAIL_FAST once the
            # server failed to answer, so every session ends with ERROR 10 (keep what you have,
            # retry later), the first one too, soon (it waited out the pool's 10 s connect
            # timeout before, holding the relay's event loop that long).
            outcomes = []
            for _ in range(2):
                async with asyncio.timeout(READ_WAIT + 4.0):  # its read's wait, and the session
                    outcomes.append(await sync_once(office, relay.url))
            for outcome in outcomes:
                assert not (outcome.synced and outcome.ok), "a push was acknowledged with Postgres down"
                assert outcome.closed is not None and outcome.closed.code == ErrorCode.LIMIT, outcome.closed
                assert outcome.closed.by_peer and "cannot" in outcome.closed.reason, outcome.closed
            status, body = await http_get(relay.url, "/healthz")
            assert status == 503 and json.loads(body)["storage"] is False, body
            assert sum(office.peer_version_vector(relay.device_id, space).values()) <= held
            server.resume()
            relay.store.outage.retry_after = 0.0  # (should a commit have failed: try at once)
            # Until the pool has reconnected (its own backoff), the device is told to retry
            # later, as a device's daemon does; bounded in count and time.
            async with asyncio.timeout(3 * WAIT):
                for _ in range(200):
                    outcome = await sync_once(office, relay.url)
                    if outcome.synced and outcome.ok:
                        break
                    assert outcome.closed is not None, outcome
                    assert outcome.closed.code == ErrorCode.LIMIT, outcome.closed
            assert await sync_until_converged([office, tablet], relay.url, space) <= 2
            assert tablet.space(space).get("equipment", "down-1") == {"n": 1, "by": "down"}
        assert stored_envelopes(url, space) == sum(office.version_vector(space).values())
    finally:
        server.stop()


async def test_the_relay_command_stores_in_postgres(tmp_path: Path, pg_url: str,
                                                    open_replica: ReplicaFactory) -> None:
    office, tablet = open_replica("office"), open_replica("tablet")
    space = share(office, tablet)
    fill(office, "office", 2, space)
    fill(tablet, "tablet", 2, space)
    async with relay_process(tmp_path / "relay", "--store", pg_url) as relay:
        assert await sync_until_converged([office, tablet], relay.url, space) == 2
    assert snapshot(office, space).key() == snapshot(tablet, space).key()
    assert stored_envelopes(pg_url, space) == sum(office.version_vector(space).values())


async def test_the_relay_command_says_when_postgres_is_unreachable(tmp_path: Path) -> None:
    url = "postgresql://relay:s3cret@127.0.0.1:1/relay?connect_timeout=2"
    code, _, err = await run_cli("relay", "--data", str(tmp_path), "--port", "0", "--store", url)
    assert code == 1, err
    assert "cannot reach the relay's Postgres at postgresql://relay@127.0.0.1:1/relay" in err
    assert "s3cret" not in err and "Traceback" not in err


def test_the_store_setting_from_env_toml_and_options(tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text('[relay]\nstore = "postgresql://toml@db/relay"\n')
    assert load_config({}, environ={}).store is None
    assert load_config({}, environ={}, config_file=toml).store == "postgresql://toml@db/relay"
    env = {"CRDT_SYNC_RELAY_STORE": "postgresql://env@db/relay"}
    assert load_config({}, environ=env, config_file=toml).store == "postgresql://env@db/relay"
    assert load_config({"store": "postgres://cli@db/relay"}, environ=env).store == "postgres://cli@db/relay"
    assert load_config({}, environ={"CRDT_SYNC_RELAY_STORE": ""}).store is None  # unset: SQLite
    with pytest.raises(ConfigError, match="store = 'mysql://db' is not a postgresql:// URL"):
        load_config({"store": "mysql://db"}, environ={})


def test_relay_store_opens_the_backend_its_setting_names(tmp_path: Path, pg_url: str) -> None:
    from crdt_sync.relay.storage import backend_for

    assert backend_for(None) is SqliteRelayBackend
    store = RelayStore(tmp_path, backend=backend_for(pg_url))
    try:
        assert isinstance(store.store, PostgresRelayBackend) and store.healthy()
        seed_holder = PostgresRelayBackend(pg_url)
        try:
            assert seed_holder.identity_seed(os.urandom(32)) == store.identity.seed
        finally:
            seed_holder.close()
    finally:
        store.close()


async def test_a_snapshot_kept_by_a_relay_on_postgres_survives_a_restart(tmp_path: Path, pg_url: str) -> None:
    """docs/PROTOCOL.md, "Snapshots in sessions": the admin's push is kept in Postgres; after
    a restart a new device starts from it and the tail."""
    from crdt_sync import Replica
    from crdt_sync.protocol.events import SnapshotVerdict

    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = admin.space("site").id
    for i in range(40):
        admin.space(space).put("equipment", "pump", {"n": i})
        admin.seal()
    admin.snapshot(space)
    async with running_relay(tmp_path / "relay", store=pg_url) as relay:
        pushed = await sync_once(admin, relay.url)
        assert pushed.ok
        assert [e.verdict for e in pushed.events if isinstance(e, SnapshotVerdict)] == ["stored"]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT author FROM space_snapshots WHERE space=%s", (space,)).fetchall() == [
            (admin.device_id,)]
    fresh = Replica(tmp_path / "fresh", seal_interval=0)
    fresh.join(admin.invite(space, "write"))
    async with running_relay(tmp_path / "relay", store=pg_url) as relay:
        assert (await sync_once(admin, relay.url)).ok
        got: list[str] = []
        for _ in range(3):
            outcome = await sync_once(fresh, relay.url)
            assert outcome.ok, outcome.closed
            got += [e.verdict for e in outcome.events if isinstance(e, SnapshotVerdict) and not e.by_peer]
            if fresh.space(space).get("equipment", "pump") == {"n": 39}:
                break
    assert got[0] == "applied"
    assert fresh.space(space).get("equipment", "pump") == {"n": 39}
    assert admin.device_id in fresh._store.chain_bases(space)
