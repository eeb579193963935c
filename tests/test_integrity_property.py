"""Property (issue 11, "Show it works"): whatever hostile envelopes three honest devices and a
relay are handed, in whatever order, over links that lose, duplicate and reorder frames, the
honest devices end with identical data for the honest authors, no session crashes, and no
value stamped far in the future wins a field.

Hostile keys sign: payloads that are not payloads, Yjs updates that do not decode, item and
register clocks above their envelope's HLC, envelope HLCs outside the range (``>= 2**62``),
envelopes far in the future (beyond the 24 h skew: held back by every device, handed only to
the relay, since ``Replica.accept`` is the layer below the session's hold-back), and forks (two
different seq-1 envelopes of one author, handed to two different places).

Sessions run sans-I/O over :class:`tests.sync_helpers.Wire`, with a tamperer driven by a
seeded RNG that drops, duplicates and delays (reorders) frames; timers resend (bounded ticks).
"""

from __future__ import annotations

import functools
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdt_sync import Replica
from crdt_sync.envelope import open_envelope, seal
from crdt_sync.hlc import COUNTER_BITS, DEFAULT_MAX_SKEW_MS, MAX_HLC, wall_ms
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.protocol import Session
from crdt_sync.protocol.messages import E_INTERNAL
from crdt_sync.relay.host import RelayHost
from crdt_sync.relay.storage import RelayStore
from tests.sync_helpers import SPACE, Wire, admit, body_of, data_payload
from tests.test_quarantine import HLC, bad_update, garbage

ENTITIES = ("pump", "valve", "tank")
COLLECTION = "equipment"
HOSTILE = "hostile"  # the marker every hostile value carries
#: three days ahead: beyond the day of skew a receiver allows
FUTURE_MS = 3 * DEFAULT_MAX_SKEW_MS
KINDS = ("garbage", "bad-update", "item-clock", "register-clock", "clock-range", "fork", "future")


@functools.cache
def _payload(entity: str, value: str) -> bytes:
    """What a real replica puts in an envelope when it writes ``{"status": value}`` to ``entity``."""
    with tempfile.TemporaryDirectory() as directory, admit(Replica(directory, seal_interval=0)) as writer:
        writer.space(SPACE).put(COLLECTION, entity, {"status": value})
        return body_of(writer.sync_host.missing_envelopes(SPACE, {}, 1, 1 << 20)[0])  # (plaintext)


@functools.cache
def _future(entity: str) -> bytes:
    """An envelope of a device whose clock runs three days ahead, writing ``entity``: consistent
    clocks, signed by its own key; it would win every field if it were taken."""
    with tempfile.TemporaryDirectory() as directory, \
            admit(Replica(directory, seal_interval=0, wall=lambda: wall_ms() + FUTURE_MS)) as writer:
        writer.space(SPACE).put(COLLECTION, entity, {"status": f"{HOSTILE} future"})
        return writer.sync_host.missing_envelopes(SPACE, {}, 1, 1 << 20)[0].wire


def _clock_breaker(key: Identity, entity: str, case: str) -> bytes:
    """A payload whose item or register clock is above the envelope's HLC, or an envelope HLC
    outside the range (the shape of tests/test_clock_property.py ``hostile``)."""
    env_hlc = HLC
    hlc = MAX_HLC if case == "clock-range" else env_hlc
    item = env_hlc + 1 if case == "item-clock" else min(hlc, env_hlc)
    register = env_hlc + (1 << COUNTER_BITS) if case == "register-clock" else item
    doc: Doc[object] = Doc(client_id=9)
    doc.get("f", type=Map)["status\x009"] = cbor2.dumps([register, key.id, 0, HOSTILE])
    payload = encode_payload([(COLLECTION, entity, pack_item(item, doc.get_update()))])
    return seal(key, SPACE, 1, b"", hlc, data_payload(key, 1, payload)).wire


def _hostile(kind: str, key: Identity, entity: str) -> list[bytes]:
    """The envelopes of one hostile act (a fork: its two branches)."""
    if kind == "garbage":
        bad = garbage(key)
        after = data_payload(key, 2, _payload(entity, HOSTILE))
        return [bad.wire, seal(key, SPACE, 2, bad.hash, HLC + 2, after).wire]
    if kind == "bad-update":
        return [bad_update(key, 1, b"", entity).wire]
    if kind == "fork":
        branches = [data_payload(key, 1, _payload(entity, f"{HOSTILE} fork {b}")) for b in "ab"]
        return [seal(key, SPACE, 1, b"", HLC + 1, payload).wire for payload in branches]
    if kind == "future":
        return [_future(entity)]
    return [_clock_breaker(key, entity, kind)]


# -- links ---------------------------------------------------------------------------------------
def lossy(rng: random.Random, loss: float = 0.15, duplicate: float = 0.1,
          delay: float = 0.15) -> Callable[[str, bytes], list[bytes]]:
    """A Wire tamperer: drops, duplicates, and delays frames behind the next one (a reorder);
    a frame still delayed when the session goes quiet is lost."""
    held: dict[str, list[bytes]] = {"a>b": [], "b>a": []}

    def tamper(direction: str, frame: bytes) -> list[bytes]:
        out = [] if rng.random() < loss else [frame]
        if out and rng.random() < duplicate:
            out.append(frame)
        if out and rng.random() < delay:
            held[direction].append(out.pop())
        elif out:
            out.extend(held[direction])
            held[direction].clear()
        return out

    return tamper


Party = Replica | RelayStore


def _session_of(party: Party) -> Session:
    if isinstance(party, RelayStore):
        return Session(RelayHost(party, lambda d: None, lambda d, n, size: None), 0.0)
    return Session(party.sync_host, 0.0)


def _sync(a: Party, b: Party, tamper: Callable[[str, bytes], list[bytes]] | None) -> bool:
    """One session between ``a`` and ``b``; raises if a session raised, fails on ERROR INTERNAL."""
    wire = Wire(_session_of(a), _session_of(b), tamper=tamper)
    wire.start()
    for _tick in range(40):  # lost frames: the timers resend (bounded)
        if (wire.a.synced and wire.b.synced) or wire.a.closed or wire.b.closed:
            break
        wire.now += 1.0
        wire.run(wire.a.tick(wire.now), wire.b.tick(wire.now))
    for side in (wire.a, wire.b):
        assert side.closed is None or side.closed.code != E_INTERNAL, side.closed
    return wire.a.synced and wire.b.synced and not wire.a.closed and not wire.b.closed


# -- the property ----------------------------------------------------------------------------------
PARTIES = 4  # three devices, then the relay
STEP = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 2), st.sampled_from(ENTITIES)),
    st.tuples(st.just("hostile"), st.sampled_from(KINDS), st.integers(0, PARTIES - 1),
              st.integers(1, PARTIES - 1), st.sampled_from(ENTITIES)),
    st.tuples(st.just("sync"), st.integers(0, PARTIES - 1), st.integers(1, PARTIES - 1)),
)


@dataclass
class World:
    """Three honest devices and a relay, and what the schedule did to them."""

    devices: list[Replica]
    relay: RelayStore
    edits: dict[str, int] = field(default_factory=dict)  # per honest device: envelopes written
    written: set[str] = field(default_factory=set)  # entities honest devices wrote
    forks: int = 0
    future: set[str] = field(default_factory=set)  # authors of far-future envelopes
    keys: int = 0

    @property
    def parties(self) -> list[Party]:
        return [*self.devices, self.relay]

    def edit(self, i: int, entity: str) -> None:
        device = self.devices[i]
        n = self.edits[device.device_id] = self.edits.get(device.device_id, 0) + 1
        device.space(SPACE).put(COLLECTION, entity, {"by": f"d{i}", "n": n})
        device.seal()
        self.written.add(entity)

    def inject(self, kind: str, target: int, other: int, entity: str) -> None:
        """A hostile act: one place gets its envelopes; a fork's second branch goes elsewhere."""
        self.keys += 1
        wires = _hostile(kind, Identity(self.keys.to_bytes(2, "big") * 16), entity)
        if kind == "future":
            target = PARTIES - 1  # handed to the relay: every device's session must hold it back
            self.future.add(open_envelope(wires[0]).author)
        batches = [(target, wires)]
        if kind == "fork":
            self.forks += 1
            batches = [(target, wires[:1]), ((target + other) % PARTIES, wires[1:])]
        for where, batch in batches:
            party = self.parties[where]
            if isinstance(party, RelayStore):
                party.accept(batch, SPACE, "stranger")
            else:
                party.accept(batch, "stranger", SPACE)  # never raises: every envelope is signed

    def converge(self) -> tuple[list[tuple[str, str, dict[str, object]]], dict[str, int]]:
        """Every pair over clean links, in bounded rounds, until the devices agree."""
        parties = self.parties
        honest = {d.device_id for d in self.devices}
        views: list[tuple[list[tuple[str, str, dict[str, object]]], dict[str, int]]] = []
        for _round in range(4):
            for i in range(PARTIES):
                for j in range(i + 1, PARTIES):
                    assert _sync(parties[i], parties[j], None), (i, j)
            views = [(sorted(d.space(SPACE).rows()),
                      {a: s for a, s in d.version_vector(SPACE).items() if a in honest})
                     for d in self.devices]
            if all(v == views[0] for v in views):
                return views[0]
        raise AssertionError(f"honest devices did not converge: {views}")


@settings(max_examples=30, deadline=None, derandomize=True)
@given(steps=st.lists(STEP, min_size=4, max_size=24), seed=st.integers(0, 2**16))
def test_honest_devices_converge_whatever_hostile_keys_sign(steps: list[tuple[Any, ...]], seed: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as root:
        # A careless relay (membership off; on by default): it takes the strangers' envelopes
        # too, so that only the devices' own checks stand between them and the data. An
        # enforcing relay refuses them first (tests/test_relay_membership.py).
        world = World([admit(Replica(Path(root) / f"d{i}", seal_interval=0)) for i in range(3)],
                      RelayStore(Path(root) / "relay", enforce_membership=False))
        try:
            for d in world.devices:
                admit(d)
            for step in steps:
                if step[0] == "edit":
                    world.edit(*step[1:])
                elif step[0] == "hostile":
                    world.inject(*step[1:])
                else:
                    a, off = step[1:]
                    parties, link = world.parties, lossy(random.Random(rng.randrange(2**32)))
                    _sync(parties[a], parties[(a + off) % PARTIES], link)
            rows, vv = world.converge()
            assert vv == world.edits
            for d in world.devices:  # no hostile chain is held as data: refused, excluded or held back
                assert d.version_vector(SPACE) == vv
                assert len(d.fork_proofs(SPACE)) == world.forks  # every fork is proven everywhere
            assert world.future <= set(world.relay.version_vector(SPACE))  # offered, never taken
            for _collection, entity, fields in rows:
                assert HOSTILE not in repr(fields), (entity, fields)  # no hostile value won a field
            assert {(c, e) for c, e, _ in rows} == {(COLLECTION, e) for e in world.written}
        finally:
            world.relay.close()
            for d in world.devices:
                d.close()
