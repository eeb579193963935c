"""Devices sync through a real relay on an ephemeral loopback port: several devices converge,
a device that was offline catches up exactly where it left off, live edits fan out, the URL an
operator hands out works, /healthz and /metrics answer, and the allow-list refuses unknown
devices until it is edited and reloaded (in-process, and by SIGHUP to a relay process)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Replica
from crdt_sync.membership import Rights
from crdt_sync.protocol import Closed, Received, Session, SessionConfig
from crdt_sync.protocol.messages import E_AUTH_FAILED, E_GOING_AWAY, E_LIMIT, Bye, Envelopes
from crdt_sync.relay.host import RelayHost
from crdt_sync.relay.metrics import REJECTION_REASONS
from crdt_sync.relay.server import RelayServer
from crdt_sync.relay.storage import RelayStore
from crdt_sync.transports.relay import Backoff, run_peer
from crdt_sync.transports.websocket import SYNC_PATH, ConnectFailed, sync_url
from tests.conftest import ReplicaFactory
from tests.helpers import SHARED, share
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity, own_space
from tests.relay_helpers import (
    RawPeer,
    arrival,
    http_get,
    rejections,
    relay_process,
    run_cli,
    running_relay,
    sample,
    scrape,
    sync_once,
    sync_until_converged,
    synced_flag,
)
from tests.sync_helpers import WAIT, applied, duplicates, fill, opened, snapshot, wait_event


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayServer]:
    async with running_relay(tmp_path / "relay") as server:
        yield server


def acknowledged_by(replica: Replica, peer: str, space: str) -> dict[str, Any] | None:
    """What ``replica``'s status says ``peer`` acknowledged of ``space``."""
    for entry in replica.status().to_dict()["spaces"][space]["peers"]:
        if entry["device"] == peer:
            return dict(entry)
    return None


# -- several devices -----------------------------------------------------------------------------
async def test_devices_converge_through_the_relay(relay: RelayServer, open_replica: ReplicaFactory) -> None:
    devices = [open_replica(f"device-{i}") for i in range(4)]
    space = share(*devices)  # device-0 made it and let the others in (SHARED envelopes of its chain)
    for i, device in enumerate(devices):
        fill(device, f"d{i}", 5, space)
        # Every device writes the same entity: its own field, and one field all of them race on.
        device.space(space).put("equipment", "shared", {f"by-{i}": i, "status": f"set by {i}"})

    # Round 1 uploads everything (each device also takes what the ones before it uploaded);
    # round 2 brings the early ones up to date. No more is needed.
    assert await sync_until_converged(devices, relay.url, space) == 2

    first = snapshot(devices[0], space)
    assert all(snapshot(d, space).key() == first.key() for d in devices[1:])
    assert len(first.version_vector) == 4 and sum(first.version_vector.values()) == 4 * 6 + SHARED
    shared = devices[0].space(space).get("equipment", "shared")
    assert {k: v for k, v in shared.items() if k.startswith("by-")} == {f"by-{i}": i for i in range(4)}
    assert shared["status"] in {f"set by {i}" for i in range(4)}
    assert relay.store.version_vector(space) == first.version_vector  # the relay holds it all
    for device in devices:
        assert device.rejections() == []
        seen = acknowledged_by(device, relay.device_id, space)
        assert seen is not None and seen["synced"] and seen["version_vector"] == first.version_vector
    samples = await scrape(relay.url)
    assert sample(samples, "crdt_relay_envelopes_in_total") == 4 * 6 + SHARED  # each stored once
    # Round 1: device i takes the i uploads before it; round 2: each takes what it lacks (the
    # others hold the SHARED envelopes already: they came with the grants).
    expected_out = sum(6 * i for i in range(4)) + sum(6 * (3 - i) for i in range(4))
    assert sample(samples, "crdt_relay_envelopes_out_total") == expected_out


async def test_offline_device_catches_up_where_it_left_off(relay: RelayServer,
                                                           open_replica: ReplicaFactory) -> None:
    a, b, c = open_replica("a"), open_replica("b"), open_replica("c")
    space = share(a, b, c)
    for name, device in zip("abc", (a, b, c), strict=True):
        fill(device, name, 3, space)
    await sync_until_converged([a, b, c], relay.url, space)
    c.close()  # c goes offline (switched off)

    for day in range(3):  # the others keep working and syncing for a while
        fill(a, f"a-day{day}", 20, space)
        b.space(space).put("equipment", "c-0", {"checked": day})  # touches what c wrote
        b.seal()  # one envelope of its own
        fill(b, f"b-day{day}", 10, space)
        await sync_once(a, relay.url)
        await sync_once(b, relay.url)
    c = open_replica("c")  # back on, with edits made while offline
    c.space(space).put("equipment", "c-0", {"offline-note": "valve replaced"})
    before = c.version_vector(space)
    at_relay = relay.store.version_vector(space)
    # (c's own new edit may be sealed already, ahead of the relay: that is not lacking)
    lacking = sum(max(0, s - before.get(author, 0)) for author, s in at_relay.items())
    assert lacking == 3 * 20 + 3 * (1 + 10)

    outcome = await sync_once(c, relay.url)
    assert outcome.synced and outcome.ok
    assert applied(outcome) == lacking and duplicates(outcome) == 0  # exactly where it left off
    assert outcome.frames_in < 20  # a few batches, not one frame per envelope
    await sync_once(a, relay.url)
    await sync_once(b, relay.url)
    assert snapshot(a, space).key() == snapshot(b, space).key() == snapshot(c, space).key()
    assert c.space(space).get("equipment", "c-0") == {"n": 0, "by": "c", "checked": 2,
                                                      "offline-note": "valve replaced"}


# -- live ------------------------------------------------------------------------------------------
async def test_live_edits_fan_out_to_every_connected_device(relay: RelayServer,
                                                            open_replica: ReplicaFactory) -> None:
    devices = [open_replica(name) for name in ("a", "b", "c")]
    a, b, c = devices
    space = share(a, b, c)
    stop = asyncio.Event()
    flags = [synced_flag(space) for _ in devices]
    backoff = Backoff(base=0.05, cap=0.5)
    async with asyncio.timeout(6 * WAIT), asyncio.TaskGroup() as tg:
        peers = [tg.create_task(run_peer(d, relay.url, stop, backoff=backoff, rng=random.Random(i),
                                         on_event=flag[1]))
                 for i, (d, flag) in enumerate(zip(devices, flags, strict=True))]
        try:
            for flag, _ in flags:
                await wait_event(flag, "a live device to catch up with the relay")
            to_b, to_c = arrival(b, "from-a", space), arrival(c, "from-a", space)
            a.space(space).put("equipment", "from-a", {"status": "leaking"})
            await wait_event(to_b, "a's edit to reach b live")
            await wait_event(to_c, "a's edit to reach c live")
            to_a = arrival(a, "from-c", space)
            c.space(space).put("equipment", "from-c", {"status": "fixed"})
            await wait_event(to_a, "c's edit to reach a live")
        finally:
            stop.set()
    assert [p.result() for p in peers] == [1, 1, 1]  # each stayed on one session throughout
    assert b.space(space).get("equipment", "from-a") == {"status": "leaking"}
    assert a.space(space).get("equipment", "from-c") == {"status": "fixed"}
    samples = await scrape(relay.url)
    # Each live delivery was timed from its acceptance to its departure (a to b and c, c to a and b).
    assert sample(samples, "crdt_relay_fanout_seconds_count") >= 4
    assert sample(samples, "crdt_relay_connections_open") == 0


# -- the URL an operator hands out -------------------------------------------------------------------
@pytest.mark.parametrize(("given", "used"), [
    ("ws://relay.example:8787", "ws://relay.example:8787/v1/sync"),
    ("ws://relay.example:8787/", "ws://relay.example:8787/v1/sync"),
    ("wss://relay.example", "wss://relay.example/v1/sync"),
    ("wss://relay.example/team-7/v1/sync", "wss://relay.example/team-7/v1/sync"),
])
def test_sync_url_adds_the_path_only_when_missing(given: str, used: str) -> None:
    assert sync_url(given) == used


@pytest.mark.parametrize("bad", ["http://relay.example", "relay.example:8787", "ws:///v1/sync"])
def test_sync_url_refuses_what_is_not_a_relay_url(bad: str) -> None:
    with pytest.raises(ValueError, match="relay URL"):
        sync_url(bad)


async def test_relay_url_without_a_path_reaches_the_sync_endpoint(relay: RelayServer,
                                                                  open_replica: ReplicaFactory) -> None:
    device = open_replica("a")
    fill(device, "a", 2, share(device))
    assert relay.url.count("/") == 2  # ws://127.0.0.1:PORT, as printed and handed out
    for url in (relay.url, relay.url + "/", relay.url + SYNC_PATH):
        outcome = await sync_once(device, url)
        assert outcome.synced and outcome.peer == relay.device_id
    with pytest.raises(ConnectFailed, match="/elsewhere"):
        await sync_once(device, relay.url + "/elsewhere")


# -- operations --------------------------------------------------------------------------------------
async def test_healthz_and_metrics(relay: RelayServer) -> None:
    status, body = await http_get(relay.url, "/healthz")
    assert status == 200 and json.loads(body) == {"ok": True, "storage": True, "bus": "off"}

    sp, envelopes = own_space(identity(), 7)
    device = EnvelopeHost(sp.creator, *envelopes)
    outcome = await exchange(device, relay.url)
    assert outcome.synced
    status, text = await http_get(relay.url, "/metrics")
    assert status == 200
    types = {"crdt_relay_connections_open": "gauge", "crdt_relay_connections_accepted_total": "counter",
             "crdt_relay_envelopes_in_total": "counter", "crdt_relay_envelopes_out_total": "counter",
             "crdt_relay_bytes_in_total": "counter", "crdt_relay_bytes_out_total": "counter",
             "crdt_relay_rejections_total": "counter", "crdt_relay_store_bytes": "gauge",
             "crdt_relay_commits_total": "counter", "crdt_relay_fanout_seconds": "histogram"}
    for name, kind in types.items():
        assert f"\n# TYPE {name} {kind}\n" in text, f"{name} ({kind}) missing from /metrics"
    samples = await scrape(relay.url)
    assert sample(samples, "crdt_relay_envelopes_in_total") == 7
    assert sample(samples, "crdt_relay_connections_accepted_total") == 1
    assert sample(samples, "crdt_relay_connections_open") == 0
    assert sample(samples, "crdt_relay_bytes_in_total") == outcome.bytes_out
    assert sample(samples, "crdt_relay_bytes_out_total") == outcome.bytes_in
    assert sample(samples, "crdt_relay_store_bytes") > 0
    assert sample(samples, "crdt_relay_commits_total") >= 1
    # Every rejection reason is listed from the start, at 0, so operators can alert on it.
    for reason in REJECTION_REASONS:
        assert ("crdt_relay_rejections_total", (("reason", reason),)) in samples, reason
        assert sample(samples, "crdt_relay_rejections_total", reason=reason) == 0


async def test_stop_says_going_away_in_the_protocol_and_in_the_websocket(tmp_path: Path) -> None:
    sp, envelopes = own_space(identity(), 2)
    device = EnvelopeHost(sp.creator, *envelopes)
    async with running_relay(tmp_path / "relay") as relay, RawPeer.open(relay.url, device) as raw:
        await raw.handshake()
        stopping = asyncio.create_task(relay.stop())
        frames = []
        for _ in range(100):  # what the relay still sends, up to its close
            if (frame := await raw.recv()) is None:
                break
            frames.append(raw.message(frame))
        await stopping
        assert frames[-1] == Bye(E_GOING_AWAY)
        assert raw.ws.close_code == 1001  # WebSocket "going away": clients come back later


# -- the allow-list ---------------------------------------------------------------------------------
async def test_allow_list_refuses_unknown_devices_until_reloaded(tmp_path: Path) -> None:
    lead, member = identity(), identity()
    sp = SpaceMaker(lead)
    a = EnvelopeHost(lead, sp.open(), sp.grant(member.public_key))
    b = EnvelopeHost(member, *(sp.data(member) for _ in range(3)))
    SPACE = sp.space
    allow = tmp_path / "allowed-devices"
    allow.write_text(f"# field team 7\n{a.device_id}   # tablet of the site lead\n\n")
    async with running_relay(tmp_path / "relay", allow_list=allow) as relay:
        assert (await exchange(a, relay.url)).synced

        refused = await exchange(b, relay.url)
        assert not refused.synced
        assert refused.closed == Closed(E_AUTH_FAILED, refused.closed.reason if refused.closed else "", True)
        assert refused.closed is not None and "allow-list" in refused.closed.reason
        assert b.device_id not in relay.store.version_vector(SPACE)  # nothing of b was taken
        assert a.device_id not in b.version_vector(SPACE)  # and b was given nothing
        assert await rejections(relay.url, "not-allowed") == 1

        allow.write_text(allow.read_text() + f"{b.device_id}\n")
        relay.reload_allow_list()
        accepted = await exchange(b, relay.url)
        assert accepted.synced and accepted.ok
        assert relay.store.version_vector(SPACE)[b.device_id] == 3
        assert b.version_vector(SPACE)[a.device_id] == 2
        assert await rejections(relay.url, "not-allowed") == 1


async def test_allow_list_reloads_on_sighup(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    lead, newcomer = open_replica("lead"), open_replica("newcomer")
    space = share(lead, newcomer)
    fill(lead, "lead", 2, space)
    fill(newcomer, "newcomer", 3, space)
    code, out, err = await run_cli("init", "--json", "--data", str(newcomer.path))
    assert code == 0, err
    assert json.loads(out)["device"] == newcomer.device_id  # the id as `crdt-sync init` prints it
    allow = tmp_path / "allowed-devices"
    allow.write_text(f"{lead.device_id}  # site lead\n")

    async with relay_process(tmp_path / "relay", "--allow-list", str(allow)) as relay:
        assert (await sync_once(lead, relay.url)).synced
        code, _, err = await run_cli("sync", "--relay", relay.url, "--data", str(newcomer.path))
        assert code == 5 and "allow-list" in err, err  # refused, with the reason, exit code 5
        assert await rejections(relay.url, "not-allowed") == 1

        # A broken edit is refused with its line number; the relay keeps the list it had.
        allow.write_text(f"{lead.device_id}\nnot-a-device-id\n")
        relay.signal(signal.SIGHUP)
        error = await relay.wait_log("relay.allow_list.error")
        assert f"{allow}:2" in error["error"]
        refused = await sync_once(newcomer, relay.url)
        assert refused.closed is not None and refused.closed.code == E_AUTH_FAILED
        assert (await sync_once(lead, relay.url)).synced

        allow.write_text(f"{lead.device_id}\n{newcomer.device_id}  # joined the team\n")
        relay.signal(signal.SIGHUP)
        reload = await relay.wait_log("relay.allow_list.reload")
        assert reload["devices"] == 2
        assert (await sync_once(newcomer, relay.url)).synced
        assert (await sync_once(lead, relay.url)).synced
        assert await rejections(relay.url, "not-allowed") == 2
        relay.signal(signal.SIGTERM)
        assert await relay.exit_code() == 0
    assert snapshot(lead, space).key() == snapshot(newcomer, space).key()
    assert len(snapshot(lead, space).rows) == 5


# -- catching up from the relay, frame by frame --------------------------------------------------
def author_and_reader(count: int) -> tuple[SpaceMaker, EnvelopeHost, EnvelopeHost]:
    """An author's space of ``count`` envelopes (its genesis, a read grant, data) and a
    device that may read it and holds nothing yet."""
    writer, reader = identity(), identity()
    sp = SpaceMaker(writer)
    envelopes = [sp.open(), sp.grant(reader.public_key, Rights.READ),
                 *(sp.data(writer, b"a-%d" % i) for i in range(count - 2))]
    return sp, EnvelopeHost(writer, *envelopes), EnvelopeHost(reader, spaces=[sp.space])


def test_catch_up_is_not_resent_to_a_device_that_keeps_acknowledging(tmp_path: Path) -> None:
    """The relay's session over its real store, sans I/O, time injected: a device that takes
    0.9 ack_timeout per batch acknowledges every batch in time, but the last batch of a window
    is acknowledged ~3.6 ack_timeout after it was sent. It must not be sent again."""
    sp, author, device = author_and_reader(40)
    SPACE = sp.space
    store = RelayStore(tmp_path / "relay")
    store.receive([e.wire for e in author.missing_envelopes(SPACE, {}, 100, 1 << 24)], SPACE, False)
    config = SessionConfig(batch_count=5, window=4, ack_timeout=1.0, resend_interval=100.0,
                           handshake_timeout=100.0, ping_interval=100.0, dead_after=100.0)
    relay = Session(RelayHost(store, lambda device: None, lambda device, n, size: None), 0.0, config)
    phone = Session(device, 0.0, config)
    held: list[bytes] = []  # the relay's batches, waiting for the device to get to them

    def deliver(from_relay: list[bytes], from_phone: list[bytes], now: float) -> None:
        queue = deque([("relay", f) for f in from_relay] + [("phone", f) for f in from_phone])
        for _ in range(10_000):
            if not queue:
                return
            sender, frame = queue.popleft()
            if sender == "relay" and isinstance(opened(phone, frame), Envelopes):
                held.append(frame)
            elif sender == "relay":
                queue.extend(("phone", f) for f in phone.receive(frame, now))
            else:
                queue.extend(("relay", f) for f in relay.receive(frame, now))
        raise AssertionError("the sessions did not go quiet")

    deliver(relay.start(), phone.start(), 0.0)
    assert len(held) == config.window
    now = 0.0
    for _ in range(100):
        if not held:
            break
        now += 0.9 * config.ack_timeout
        deliver([], phone.receive(held.pop(0), now), now)
        deliver(relay.tick(now), phone.tick(now), now)
    assert not held and device.version_vector(SPACE) == {author.device_id: 40}
    assert relay.envelopes_out == 40, "batches the device was still working through were resent"
    received = [e for e in phone.pop_events() if isinstance(e, Received)]
    assert sum(e.applied for e in received) == 40 and sum(e.duplicates for e in received) == 0
    store.close()


# -- fan-out from the in-memory tail, and catching up behind it ----------------------------------
@pytest.mark.parametrize("chunk", [1, 3, 12], ids=["from-the-tail", "at-its-edge", "behind-it"])
def test_live_fan_out_from_the_tail_and_from_storage_behind_it(tmp_path: Path, chunk: int) -> None:
    """The relay keeps only 4 new envelopes per space in memory here: a session that learns
    of more at once reads the rest from SQLite, then continues from memory. Either way the
    device gets each envelope once, in order (sans I/O; the store writes through without
    an event loop)."""
    sp, author, device = author_and_reader(48)
    SPACE = sp.space
    wires = [e.wire for e in author.missing_envelopes(SPACE, {}, 100, 1 << 24)]
    store = RelayStore(tmp_path / "relay", tail_entries=4)
    store.receive(wires[:5], SPACE, False)
    config = SessionConfig(batch_count=5, window=2, resend_interval=100.0, handshake_timeout=100.0,
                           ping_interval=100.0, dead_after=100.0)
    relay = Session(RelayHost(store, lambda device: None, lambda device, n, size: None), 0.0, config)
    phone = Session(device, 0.0, config)

    def deliver(from_relay: list[bytes], from_phone: list[bytes]) -> None:
        queue = deque([("relay", f) for f in from_relay] + [("phone", f) for f in from_phone])
        for _ in range(10_000):
            if not queue:
                return
            sender, frame = queue.popleft()
            if sender == "relay":
                queue.extend(("phone", f) for f in phone.receive(frame, 0.0))
            else:
                queue.extend(("relay", f) for f in relay.receive(frame, 0.0))
        raise AssertionError("the sessions did not go quiet")

    deliver(relay.start(), phone.start())
    assert device.version_vector(SPACE) == {author.device_id: 5}
    reads = 0
    read = store.reader.missing_envelopes

    def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return read(*args)

    store.reader.missing_envelopes = counted  # type: ignore[method-assign]
    for start in range(5, len(wires), chunk):
        store.receive(wires[start:start + chunk], SPACE, False)
        deliver(relay.local_changed(0.0), [])
        assert device.version_vector(SPACE) == {author.device_id: min(start + chunk, len(wires))}
    received = [e for e in phone.pop_events() if isinstance(e, Received)]
    assert sum(e.applied for e in received) == 48 and sum(e.duplicates + e.gaps for e in received) == 0
    assert relay.envelopes_out == 48
    assert (reads == 0) == (chunk <= 4), f"{reads} reads from SQLite"  # 4: the tail's size
    store.close()


def test_pre_encoded_envelopes_frame_is_the_canonical_encoding() -> None:
    import cbor2

    from crdt_sync.protocol.messages import WireEnvelope, encode
    from crdt_sync.protocol.prebuilt import cbor_ref, encode_envelopes

    rng = random.Random(7)
    for space, batch, count in [(0, 1, 1), (23, 24, 0), (300, 70_000, 30), (5, 2**33, 3)]:
        envs = [WireEnvelope(rng.choice([rng.randrange(0, 5000), rng.randbytes(32)]),
                             rng.randrange(1, 2**40), rng.randrange(0, 2**64),
                             rng.randbytes(rng.choice([0, 10, 300, 70_000])), rng.randbytes(64))
                for _ in range(count)]
        items = [b"\x85" + cbor_ref(e.author) + cbor2.dumps([e.seq, e.hlc, e.payload, e.signature])[1:]
                 for e in envs]
        assert encode_envelopes(space, batch, items) == encode(Envelopes(space, batch, envs))


async def test_a_failed_commit_acknowledges_nothing_and_the_device_sends_again(
        relay: RelayServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fails on the group commit: the envelopes it held were forwarded maybe, but
    never ACKed; the relay forgets them (its heads come back from SQLite) and takes them
    again from the device's next session."""
    import sqlite3

    sp, envelopes = own_space(identity(), 5)
    a = EnvelopeHost(sp.creator, *envelopes)
    SPACE = sp.space
    commit = relay.store._commit_tx
    failures = []

    def failing_once() -> None:
        if not failures:
            failures.append(1)
            relay.store.store.rollback()  # what a failed COMMIT leaves
            raise sqlite3.OperationalError("disk I/O error (injected)")
        commit()

    monkeypatch.setattr(relay.store, "_commit_tx", failing_once)
    first = await exchange(a, relay.url)
    assert failures and not first.synced
    assert a.acked.get((relay.device_id, SPACE), {}).get(a.device_id, 0) == 0  # no ACK of them
    assert relay.store.version_vector(SPACE) == {}  # forgotten with the failed commit
    assert relay.store.members(SPACE).log.genesis() is None  # and so is its membership
    # Right after the failure, a push is refused at once, with the reason (relay/outage.py).
    refused = await exchange(a, relay.url)
    assert not refused.synced and refused.closed is not None and refused.closed.code == E_LIMIT
    assert "disk I/O error (injected)" in refused.closed.reason and "retry" in refused.closed.reason
    relay.store.outage.retry_after = 0.0  # (the retry window has passed)
    again = await exchange(a, relay.url)
    assert again.synced and again.ok
    assert relay.store.version_vector(SPACE) == {a.device_id: 5}
    assert relay.store.reader.version_vector(SPACE) == {a.device_id: 5}  # on disk this time
