"""Snapshots in sessions (docs/PROTOCOL.md, "Snapshots in sessions"): a new device starts from
a snapshot plus the tail, from a real relay on loopback or from another device, and verifies
both; a device that holds chains only from a snapshot serves a new peer; the relay keeps the
newest admin snapshot it is pushed. Each attack is played against the real code first (a
stranger pulling, a writer's snapshot, a tampered one), and shown refused with its reason,
recorded, while the session carries on."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest

from crdt_sync import Replica
from crdt_sync import snapshot as sn
from crdt_sync.identity import public_key_of
from crdt_sync.protocol import Session
from crdt_sync.protocol.config import SessionConfig
from crdt_sync.protocol.events import SnapshotVerdict
from crdt_sync.protocol.host import SnapshotOffer
from crdt_sync.protocol.messages import (
    E_LIMIT,
    E_NORMAL,
    E_UNEXPECTED,
    MessageType,
    ProtocolViolation,
    SnapshotAck,
    SnapshotChunk,
    decode,
)
from crdt_sync.protocol.snapshots import SessionSnapshots, wanted
from crdt_sync.protocol.spaces import SpaceState
from crdt_sync.relay.server import RelayServer
from crdt_sync.snapshot_transfer import decode_transfer, encode_transfer
from crdt_sync.transports.driver import SessionOutcome
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests import snapshot_vectors as sv
from tests.helpers import space_state
from tests.relay_envelopes import EnvelopeHost, exchange, identity
from tests.relay_helpers import FAST as RELAY_FAST
from tests.relay_helpers import running_relay, sync_once
from tests.sync_helpers import FAST, Wire, sync_over

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<what>.+) \| `(?P<hex>[0-9a-f]+)` \|$")
EDITS = 150


# -- helpers --------------------------------------------------------------------------------------
def edit(replica: Replica, space: str, entity: str, n: int) -> None:
    replica.space(space).put("equipment", entity, {"n": n, "note": f"reading {n} " + "x" * 40})
    replica.seal()


def history(admin: Replica, edits: int = EDITS, name: str = "site") -> str:
    """A space of ``admin`` with ``edits`` edits of two entities, each sealed alone (a long
    history of a small state: what a snapshot saves)."""
    space = admin.space(name).id
    for i in range(edits):
        edit(admin, space, "pump" if i % 2 else "valve", i)
    return space


def contents(replica: Replica, space: str) -> dict[str, object]:
    state = space_state(replica, space)
    state.pop("vv")
    return state


def verdicts(outcome: SessionOutcome, by_peer: bool | None = None) -> list[tuple[str, str]]:
    return [(e.verdict, e.detail) for e in outcome.events
            if isinstance(e, SnapshotVerdict) and (by_peer is None or e.by_peer is by_peer)]


def reasons(replica: Replica) -> list[str]:
    return [r.reason for r in replica.rejections()]


def relay_reasons(relay: RelayServer) -> list[str]:
    return [r.reason for r in relay.store.rejections()]


def joined(admin: Replica, root: Path, name: str, rights: str = "write") -> Replica:
    """A new device let in by an invite of ``admin`` (published in ``admin``'s chain): it
    holds the space's keys and its redemption, nothing else."""
    device = Replica(root / name, seal_interval=0)
    device.join(admin.invite(admin.space_id("site"), rights))
    return device


async def until_converged(device: Replica, url: str, space: str, target: Replica,
                         rounds: int = 3) -> list[SessionOutcome]:
    """Sessions of ``device`` with the relay until it holds ``target``'s contents (bounded)."""
    outcomes = []
    for _ in range(rounds):
        outcome = await sync_once(device, url)
        assert outcome.ok, outcome.closed
        outcomes.append(outcome)
        if contents(device, space) == contents(target, space) and \
                all(device.version_vector(space).get(a, 0) >= s
                    for a, s in target.version_vector(space).items()):
            return outcomes
    raise AssertionError(f"{device.device_id} did not converge: {device.version_vector(space)} "
                         f"vs {target.version_vector(space)}")


def keep(replica: Replica, space: str, wire: bytes) -> None:
    """Make ``wire`` the snapshot ``replica`` keeps (what a device that made or imported it
    keeps): the attacker's own store."""
    snap = sn.decode_trusted(wire)
    store = replica._store
    with store.write():
        store.db.execute("DELETE FROM snapshots WHERE space=?", (space,))
        store.keep_snapshot(space, snap.author, snap.hlc, wire)


def forged_by(author: Replica, space: str) -> bytes:
    """A snapshot signed by ``author`` (a writer: any member holds the keys and can sign one)
    of what it holds, claiming the space is empty."""
    store = author._store
    covered = [(public_key_of(a), *store.chain_head(space, a)) for a in store.version_vector(space)]
    keyring = author.secrets.keyring()
    _n, epoch_id = keyring.epochs(space)[-1]
    key = keyring.key(space, epoch_id)
    assert key is not None
    return sn.make_snapshot(author.identity, space, author._clock.now(), covered, key, epoch_id, []).wire


def flipped(wire: bytes) -> bytes:
    """``wire`` with one bit of its ciphertext flipped (the signature no longer verifies)."""
    snap = sn.decode_trusted(wire)
    at = wire.index(snap.ciphertext) + len(snap.ciphertext) // 2
    return wire[:at] + bytes([wire[at] ^ 1]) + wire[at + 1:]


def resigned(admin: Replica, wire: bytes) -> bytes:
    """``wire`` with a bit of its ciphertext flipped and signed again by ``admin``: the
    signature verifies (a relay cannot tell), the blob does not authenticate."""
    snap = sn.decode_trusted(wire)
    ct = bytearray(snap.ciphertext)
    ct[len(ct) // 2] ^= 1
    s = replace(snap, ciphertext=bytes(ct))
    signature = admin.identity.sign(sn.signed_bytes(s.space, s.author_key, s.hlc, s.covered, s.epoch_id,
                                                    s.nonce, s.ciphertext))
    return cbor2.dumps([sn.SNAPSHOT_FORMAT, s.space, s.author_key, s.hlc, [list(c) for c in s.covered],
                        s.epoch_id, s.nonce, s.ciphertext, signature], canonical=True)


# -- the documented frames ------------------------------------------------------------------------
def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    block = text.split("<!-- snapshot-session-vectors:begin -->")[1]
    block = block.split("<!-- snapshot-session-vectors:end -->")[0]
    return {m["name"]: bytes.fromhex(m["hex"]) for line in block.splitlines() if (m := ROW.match(line))}


def test_the_documented_session_vectors_are_what_the_code_makes() -> None:
    documented = doc_vectors()
    assert documented == {name: data for name, _what, data in sv.session_vectors()}
    record = sv.build()
    transfer = decode_transfer(documented["transfer"])
    assert transfer.snapshot == record.wire and transfer.membership == []
    chunk = decode(documented["SNAPSHOT"])
    assert chunk == SnapshotChunk(0, record.hash, len(documented["transfer"]), 0, documented["transfer"],
                                  [(sv.BOB.public_key, 1)])
    ack = decode(documented["SNAPSHOT_ACK"])
    assert ack == SnapshotAck(0, record.hash, len(documented["transfer"]), "applied", "")


@pytest.mark.parametrize("frame, what", [
    ([14, 0, bytes(32), 10, 8, b"abc", []], "within the transfer"),  # past total
    ([14, 0, bytes(32), 10, 0, b"", []], "1 byte or more"),
    ([14, 0, bytes(31), 10, 0, b"a", []], "snapshot id"),
    ([14, 0, bytes(32), 10, 0, b"a", [[bytes(32), 0]]], "seq starts at 1"),
    ([14, 0, bytes(32), 1 << 40, 0, b"a", []], "snapshot size"),
    ([15, 0, bytes(32), 1, "x" * 65, ""], "verdict"),
])
def test_malformed_snapshot_frames_are_refused(frame: list[object], what: str) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        decode(cbor2.dumps(frame, canonical=True))
    assert what in str(caught.value)


def test_the_offer_rule() -> None:
    offer = SnapshotOffer(bytes(32), {"a": 2000, "b": 10}, {}, lambda: b"")
    assert wanted(offer, {}, 1024)  # a new device
    assert wanted(offer, {"me": 1}, 1024)  # its own redemption does not count
    assert not wanted(offer, {"a": 1990, "b": 5}, 1024)  # 15 behind: the envelopes
    assert wanted(offer, {"a": 900, "b": 10}, 1024)  # 1,100 behind
    assert not wanted(offer, {"a": 2000, "b": 10}, 1024)  # nothing to give
    based = replace(offer, bases={"b": 10})
    assert wanted(based, {"a": 2000, "b": 3}, 1024)  # below a chain base: only the snapshot
    assert not wanted(replace(offer, to_relay=True), {}, 1024)  # a relay never starts from one


def test_a_session_checks_a_bounded_number_of_transfers() -> None:
    """A peer cannot make this side check transfers without end: the 65th is ERROR 10."""
    snapshots = SessionSnapshots(EnvelopeHost(identity()), SessionConfig(), lambda e: None)
    snapshots.enabled = True
    st = SpaceState("s", 0, 0)
    for n in range(64):  # (this host takes none: each is answered on its first chunk)
        [answer] = snapshots.on_chunk(st, SnapshotChunk(0, n.to_bytes(32, "big"), 1, 0, b"x", []), "peer")
        assert decode(answer) == SnapshotAck(0, n.to_bytes(32, "big"), 1, "snapshot-unsupported",
                                             "this side takes no snapshots")
    with pytest.raises(ProtocolViolation) as caught:
        snapshots.on_chunk(st, SnapshotChunk(0, bytes([0xFF]) * 32, 1, 0, b"x", []), "peer")
    assert caught.value.code == E_LIMIT


def test_a_version_3_session_refuses_snapshot_frames() -> None:
    snapshots = SessionSnapshots(EnvelopeHost(identity()), SessionConfig(), lambda e: None)
    st = SpaceState("s", 0, 0)
    with pytest.raises(ProtocolViolation) as caught:
        snapshots.on_chunk(st, SnapshotChunk(0, bytes(32), 1, 0, b"x", []), "peer")
    assert caught.value.code == E_UNEXPECTED


# -- through a real relay -------------------------------------------------------------------------
async def test_a_new_device_starts_from_the_relays_snapshot_and_the_tail(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        # A device that joins before any snapshot exists gets the whole history.
        full = joined(admin, tmp_path, "full")
        assert (await sync_once(admin, relay.url)).ok
        full_bytes = sum(o.bytes_in for o in await until_converged(full, relay.url, space, admin))

        admin.snapshot(space)
        for i in range(5):  # the tail
            edit(admin, space, "pump", 1000 + i)
        pushed = await sync_once(admin, relay.url)
        assert pushed.ok
        assert verdicts(pushed, by_peer=True) == [("stored", f"kept as the snapshot of {space}")]
        kept = relay.store.kept_snapshot(space)
        assert kept is not None and kept.author == admin.device_id

        fresh = joined(admin, tmp_path, "fresh")
        assert (await sync_once(admin, relay.url)).ok
        outcomes = await until_converged(fresh, relay.url, space, admin)
        assert next(v for o in outcomes for v, _ in verdicts(o, by_peer=False)) == "applied"
        fresh_bytes = sum(o.bytes_in for o in outcomes)
        assert (await sync_once(full, relay.url)).ok
    # The same space as a device with the whole history, and as its admin.
    assert contents(fresh, space) == contents(full, space) == contents(admin, space)
    assert fresh.space(space).get("equipment", "pump")["n"] == 1004
    # It holds the chains from the snapshot (a base), not the envelopes below it.
    bases = fresh._store.chain_bases(space)
    assert bases[admin.device_id][0] == sn.decode_snapshot(kept.wire).version_vector[admin.device_id]
    assert fresh._store.envelope_wire(space, admin.device_id, 10) is None
    assert fresh_bytes < 0.2 * full_bytes, (fresh_bytes, full_bytes)
    assert reasons(fresh) == []


async def test_a_stranger_gets_no_snapshot_and_a_member_is_offered_one(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 20)
    admin.snapshot(space)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        assert relay.store.kept_snapshot(space) is not None
        # The attack: a stranger names the space and asks for everything.
        stranger = EnvelopeHost(identity(), spaces=[space])
        outcome = await exchange(stranger, relay.url)
        assert outcome.ok, outcome.closed
        assert verdicts(outcome) == [] and stranger.got(space) == []
        # A member that holds nothing is offered it (this host takes no snapshots: it says so,
        # and is sent the whole history instead).
        member = EnvelopeHost(admin.identity, spaces=[space])
        outcome = await exchange(member, relay.url)
        assert outcome.ok, outcome.closed
        assert verdicts(outcome, by_peer=False) == [("snapshot-unsupported", "this side takes no snapshots")]
        assert len(member.got(space)) == sum(admin.version_vector(space).values())


async def test_the_relay_refuses_a_writers_snapshot_with_a_reason(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 10)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        writer = joined(admin, tmp_path, "writer")
        assert (await sync_once(admin, relay.url)).ok
        await until_converged(writer, relay.url, space, admin)
        edit(writer, space, "pump", 77)
        # The attack: a writer signs a snapshot of its own (it holds the keys) and pushes it.
        keep(writer, space, forged_by(writer, space))
        outcome = await sync_once(writer, relay.url)
        assert outcome.ok, outcome.closed  # the session carries on: its envelope is stored
        [(verdict, detail)] = verdicts(outcome, by_peer=True)
        assert verdict == "snapshot-not-admin" and writer.device_id in detail
        assert relay.store.kept_snapshot(space) is None
        assert "snapshot-not-admin" in relay_reasons(relay)
        mine = writer.version_vector(space)[writer.device_id]
        assert relay.store.version_vector(space)[writer.device_id] == mine
        # It is not pushed again (the relay answered it).
        assert verdicts(await sync_once(writer, relay.url)) == []


async def test_the_relay_refuses_a_tampered_snapshot(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 10)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        keep(admin, space, flipped(admin.snapshot(space)))
        outcome = await sync_once(admin, relay.url)
        assert outcome.ok, outcome.closed
        assert [v for v, _ in verdicts(outcome, by_peer=True)] == ["snapshot-bad-signature"]
        assert relay.store.kept_snapshot(space) is None
        assert "snapshot-bad-signature" in relay_reasons(relay)


async def test_a_device_refuses_a_snapshot_the_relay_could_not_check_and_gets_the_history(
        tmp_path: Path) -> None:
    """The relay stores what verifies without keys; a blob tampered and signed again by the
    admin's key reaches devices, which refuse it (it does not authenticate) and take the
    whole history instead."""
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 20)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        keep(admin, space, resigned(admin, admin.snapshot(space)))
        assert verdicts(await sync_once(admin, relay.url), by_peer=True)[0][0] == "stored"
        fresh = joined(admin, tmp_path, "fresh")
        assert (await sync_once(admin, relay.url)).ok
        outcomes = await until_converged(fresh, relay.url, space, admin)
    got = [v for o in outcomes for v, _ in verdicts(o, by_peer=False)]
    assert got[0] == "snapshot-undecryptable"
    assert "snapshot-undecryptable" in reasons(fresh)
    assert fresh._store.chain_bases(space) == {}
    assert contents(fresh, space) == contents(admin, space)


def test_the_relays_rule(tmp_path: Path) -> None:
    """What the relay checks of a pushed snapshot, each refusal with its reason (the store's
    rule, called as a session's host calls it)."""
    import asyncio

    async def run() -> None:
        admin = Replica(tmp_path / "admin", seal_interval=0)
        space = history(admin, 6)
        async with running_relay(tmp_path / "relay") as relay:
            assert (await sync_once(admin, relay.url)).ok
            store = relay.store

            def push(wire: bytes, in_space: str = space) -> str:
                return store.offer_snapshot(in_space, encode_transfer(wire, []), "test")[0]

            first = admin.snapshot(space)
            assert push(first) == "stored" and push(first) == "known"
            edit(admin, space, "pump", 99)  # not at the relay yet
            ahead = admin.snapshot(space)
            assert push(ahead) == "snapshot-ahead"
            assert (await sync_once(admin, relay.url)).ok  # (it pushes `ahead` itself: newer)
            assert store.kept_snapshot(space).hash == sn.decode_snapshot(ahead).hash
            assert push(first) == "snapshot-stale"
            other = history(admin, 2, name="other")
            assert push(admin.snapshot(other), space) == "snapshot-wrong-space"
            assert push(b"\x82\x41") == "snapshot-malformed"

    asyncio.run(run())


# -- between devices ------------------------------------------------------------------------------
async def device_sessions(a: Replica, b: Replica, rounds: int, space: str, target: Replica,
                          conditions: LinkConditions | None = None,
                          config: SessionConfig = FAST) -> list[SessionOutcome]:
    """One-shot sessions of ``a`` with ``b`` over memory links (both ways ``conditions``)
    until ``b`` holds ``target``'s contents (bounded). Returns ``b``'s outcomes."""
    outcomes = []
    for n in range(rounds):
        link_a, link_b = MemoryNetwork(seed=n).pair(conditions, conditions)
        out_a, out_b = await sync_over(a, b, link_a, link_b, config=config)
        # (the first session of a new member may end before ``a`` is synced: ``b``'s
        # redemption reaches ``a`` in it, and ``b`` has nothing more to wait for)
        assert all(o.closed is None or o.closed.code == E_NORMAL for o in (out_a, out_b)), \
            (out_a.closed, out_b.closed)
        outcomes.append(out_b)
        if contents(b, space) == contents(target, space):
            return outcomes
    raise AssertionError(f"{b.device_id} did not converge")


async def test_a_device_with_chain_bases_serves_a_new_peer(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin)
    admin.snapshot(space)
    async with running_relay(tmp_path / "relay") as relay:
        assert (await sync_once(admin, relay.url)).ok
        based = joined(admin, tmp_path, "based")
        newcomer = joined(admin, tmp_path, "newcomer")  # (its invite is in the tail)
        assert (await sync_once(admin, relay.url)).ok
        await until_converged(based, relay.url, space, admin)
    bases = based._store.chain_bases(space)
    assert admin.device_id in bases
    assert based._store.envelope_wire(space, admin.device_id, 10) is None  # it cannot send history
    # The newcomer's redemption reaches ``based`` by file (a device serves only a member it
    # knows, and the newcomer, which holds nothing else, sends nothing to a stranger).
    based.import_bundle(newcomer.export_bundle(space))

    outcomes = await device_sessions(based, newcomer, 3, space, admin)
    got = [(v, e) for o in outcomes for v, e in verdicts(o, by_peer=False)]
    assert got and got[0][0] == "applied"
    assert contents(newcomer, space) == contents(admin, space)
    assert newcomer._store.chain_bases(space)[admin.device_id] == bases[admin.device_id]


async def test_a_device_refuses_a_writers_snapshot_and_gets_the_history(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 30)
    writer = joined(admin, tmp_path, "writer")
    newcomer = joined(admin, tmp_path, "newcomer")
    async with running_relay(tmp_path / "relay") as relay:
        for device in (admin, writer, admin):
            assert (await sync_once(device, relay.url)).ok
        await until_converged(writer, relay.url, space, admin)
    writer.import_bundle(newcomer.export_bundle(space))  # (its redemption, by file)
    # The attack: the writer serves the newcomer a snapshot it signed itself.
    keep(writer, space, forged_by(writer, space))
    outcomes = await device_sessions(writer, newcomer, 3, space, admin)
    got = [v for o in outcomes for v, _ in verdicts(o, by_peer=False)]
    assert got[0] == "snapshot-not-admin"
    assert "snapshot-not-admin" in reasons(newcomer)
    assert newcomer._store.chain_bases(space) == {}
    assert contents(newcomer, space) == contents(admin, space)  # the whole history instead


async def test_a_device_refuses_a_tampered_snapshot_from_a_peer(tmp_path: Path) -> None:
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 30)
    newcomer = joined(admin, tmp_path, "newcomer")
    keep(admin, space, flipped(admin.snapshot(space)))
    outcomes = await device_sessions(admin, newcomer, 3, space, admin)
    got = [v for o in outcomes for v, _ in verdicts(o, by_peer=False)]
    assert got[0] == "snapshot-bad-signature"
    assert "snapshot-bad-signature" in reasons(newcomer)
    assert contents(newcomer, space) == contents(admin, space)


def test_a_version_3_peer_syncs_without_snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An old peer (its HELLO says 3..3) and a new one agree on version 3: no snapshot moves,
    the whole history does, and the session ends synced."""
    from crdt_sync.protocol import handshake
    from crdt_sync.protocol import session as session_module

    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 20)
    admin.snapshot(space)
    newcomer = joined(admin, tmp_path, "newcomer")
    with monkeypatch.context() as patch:
        patch.setattr(session_module, "MAX_VERSION", 3)
        old = Session(newcomer.sync_host, 0.0)
    receive = old.receive

    def receive_as_version_3(frame: bytes, now: float) -> list[bytes]:
        with monkeypatch.context() as patch:
            patch.setattr(handshake, "MAX_VERSION", 3)  # what the old peer negotiates
            return receive(frame, now)

    old.receive = receive_as_version_3  # type: ignore[method-assign]
    new = Session(admin.sync_host, 0.0)
    wire = Wire(new, old)
    wire.start()
    for _ in range(3):  # the newcomer's redemption opens the space: a second round serves it
        wire.run(new.local_changed(0.0), old.local_changed(0.0))
    assert new.version == old.version == 3
    assert not [m for _d, m in wire.log if m[1] in (MessageType.SNAPSHOT, MessageType.SNAPSHOT_ACK)]
    assert new.synced and old.synced
    assert newcomer._store.chain_bases(space) == {}
    assert contents(newcomer, space) == contents(admin, space)


async def test_a_snapshot_in_many_chunks_over_a_lossy_link(tmp_path: Path) -> None:
    """Chunks lost, duplicated and reordered: resent from what the receiver holds (go-back-N),
    put back in order; the newcomer ends with the admin's space from the snapshot."""
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 40)
    for i in range(40):  # more entities: a transfer of several kilobytes
        admin.space(space).put("log", f"entry-{i}", {"text": f"entry {i} " + "y" * 100})
    admin.seal()
    admin.snapshot(space)
    newcomer = joined(admin, tmp_path, "newcomer")
    admin.import_bundle(newcomer.export_bundle(space))  # (its redemption, by file)
    lossy = LinkConditions(loss=0.15, duplicate=0.1, reorder=0.2)
    config = replace(FAST, batch_bytes=256)  # chunks of 256 bytes
    outcomes = await device_sessions(admin, newcomer, 6, space, admin, lossy, config)
    got = [(v, size) for o in outcomes for e in o.events
           if isinstance(e, SnapshotVerdict) and not e.by_peer for v, size in [(e.verdict, e.size)]]
    assert got and got[0][0] == "applied" and got[0][1] > 8 * 256
    assert contents(newcomer, space) == contents(admin, space)
    assert admin.device_id in newcomer._store.chain_bases(space)


async def test_a_snapshot_of_many_chunks_through_the_relay(tmp_path: Path) -> None:
    """Pushed and pulled in chunks of 1 KiB, within the window (the relay's sessions and the
    devices' use the same chunk size here)."""
    small = replace(RELAY_FAST, batch_bytes=1024)
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 10)
    for i in range(60):
        admin.space(space).put("log", f"entry-{i}", {"text": os.urandom(200).hex()})  # (not compressible)
    admin.seal()
    admin.snapshot(space)
    async with running_relay(tmp_path / "relay", small) as relay:
        pushed = await sync_once(admin, relay.url, config=small)
        assert pushed.ok and [v for v, _ in verdicts(pushed, by_peer=True)] == ["stored"]
        fresh = joined(admin, tmp_path, "fresh")
        assert (await sync_once(admin, relay.url, config=small)).ok
        outcomes = []
        for _ in range(3):
            outcome = await sync_once(fresh, relay.url, config=small)
            assert outcome.ok, outcome.closed
            outcomes.append(outcome)
            if contents(fresh, space) == contents(admin, space):
                break
    sizes = [e.size for o in outcomes for e in o.events if isinstance(e, SnapshotVerdict) and not e.by_peer]
    assert sizes and sizes[0] > 8 * 1024
    assert contents(fresh, space) == contents(admin, space)


async def test_a_device_far_behind_starts_again_from_the_snapshot(tmp_path: Path) -> None:
    """A device that holds the start of the history and lacks at least ``snapshot_lag`` of
    what the snapshot covers is sent the snapshot; one a few envelopes behind is not."""
    lag = replace(RELAY_FAST, snapshot_lag=50)
    admin = Replica(tmp_path / "admin", seal_interval=0)
    space = history(admin, 10)
    async with running_relay(tmp_path / "relay", lag) as relay:
        assert (await sync_once(admin, relay.url)).ok
        behind = joined(admin, tmp_path, "behind")
        close = joined(admin, tmp_path, "close")
        assert (await sync_once(admin, relay.url)).ok
        for device in (behind, close):
            await until_converged(device, relay.url, space, admin)
        for i in range(80):
            edit(admin, space, "pump", 200 + i)
        assert (await sync_once(admin, relay.url)).ok  # (no snapshot at the relay yet)
        await until_converged(close, relay.url, space, admin)
        admin.snapshot(space)
        edit(admin, space, "valve", 999)  # the tail
        assert (await sync_once(admin, relay.url)).ok  # pushed
        far = await until_converged(behind, relay.url, space, admin)  # 81 behind
        near = await until_converged(close, relay.url, space, admin)  # 1 behind
    assert [v for o in far for v, _ in verdicts(o, by_peer=False)] == ["applied"]
    assert [v for o in near for v, _ in verdicts(o)] == []
    assert contents(behind, space) == contents(close, space) == contents(admin, space)
    assert admin.device_id in behind._store.chain_bases(space)
    assert behind._store.envelope_wire(space, admin.device_id, 5) is not None  # what it held stays


def test_the_sync_report_says_what_happened_to_snapshots() -> None:
    from crdt_sync.cli import sync_report

    events = [SnapshotVerdict("s1", bytes(32), "applied", "2 entities", False, 2048),
              SnapshotVerdict("s1", bytes(32), "snapshot-not-admin", "not an admin", True, 512)]
    report = sync_report.build("ws://relay", Session(EnvelopeHost(identity()), 0.0), None, True, events, 0, 0)
    assert report.to_dict()["snapshots"] == [
        {"by": "this device", "space": "s1", "verdict": "applied", "detail": "2 entities", "bytes": 2048},
        {"by": "relay", "space": "s1", "verdict": "snapshot-not-admin", "detail": "not an admin",
         "bytes": 512}]
    text = sync_report.summary(report)
    assert "snapshot of s1 from the relay (2048 bytes): applied" in text
    assert "the relay answered this device's snapshot of s1: snapshot-not-admin" in text
