"""Delayed ACKs (docs/PROTOCOL.md, "Delayed ACKs"): once a space is synced, a device's live
ACKs wait up to ``ack_delay`` and one ACK, of the last batch, covers up to ``ack_every``
frames; the catch-up before it, and a relay, ACK every frame at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.protocol import Session
from crdt_sync.protocol.config import RELIABLE_LINK
from crdt_sync.protocol.messages import Ack, Envelopes
from crdt_sync.relay.config import RelayConfig
from crdt_sync.relay.server import RelayServer
from tests.helpers import share
from tests.sync_helpers import Wire, fill

LIVE = dataclasses.replace(RELIABLE_LINK, window=8, batch_count=4)


def acks(wire: Wire, direction: str) -> list[int]:
    """The batches acknowledged in ``direction``, in order (ACK of batch 0 left out: those
    answer HAVE or close)."""
    return [m.batch for m in wire.sent(direction) if isinstance(m, Ack) and m.batch]


def batches(wire: Wire, direction: str) -> list[int]:
    return [m.batch for m in wire.sent(direction) if isinstance(m, Envelopes)]


def live_pair(tmp_path: Path, config: object) -> tuple[Replica, Replica, Wire, str]:
    a, b = Replica(tmp_path / "a", seal_interval=0), Replica(tmp_path / "b", seal_interval=0)
    space = share(a, b)
    fill(a, "a", 12, space)  # a catch-up of 3 batches of 4
    wire = Wire(Session(a.sync_host, 0.0, config), Session(b.sync_host, 0.0, config))  # type: ignore[arg-type]
    wire.start()
    return a, b, wire, space


def edit(wire: Wire, a: Replica, space: str, name: str) -> None:
    a.space(space).put("equipment", name, {"n": 1, "by": "a"})
    wire.run(wire.a.local_changed(wire.now), [])


def test_the_catch_up_is_acked_frame_by_frame_then_live_acks_wait(tmp_path: Path) -> None:
    a, b, wire, space = live_pair(tmp_path, LIVE)
    with a, b:
        caught_up = batches(wire, "a>b")
        assert len(caught_up) >= 3 and acks(wire, "b>a") == caught_up  # one ACK per batch, at once
        assert wire.a.synced and wire.b.synced
        before = len(acks(wire, "b>a"))
        edit(wire, a, space, "live-1")
        edit(wire, a, space, "live-2")
        assert len(acks(wire, "b>a")) == before  # two frames wait (ack_every = 3)
        assert b.version_vector(space) == a.version_vector(space)  # delivered all the same
        edit(wire, a, space, "live-3")
        assert acks(wire, "b>a")[before:] == [batches(wire, "a>b")[-1]]  # one ACK covers all three
        assert wire.a.envelopes_acked == wire.a.envelopes_out
        edit(wire, a, space, "live-4")  # alone: its ACK waits for the delay
        assert wire.a.envelopes_acked < wire.a.envelopes_out
        deadline = wire.b.next_deadline()
        assert deadline is not None and deadline <= wire.now + RELIABLE_LINK.ack_delay
        wire.now += RELIABLE_LINK.ack_delay
        wire.run([], wire.b.tick(wire.now))
        assert acks(wire, "b>a")[-1] == batches(wire, "a>b")[-1]
        assert wire.a.envelopes_acked == wire.a.envelopes_out


def test_without_a_delay_every_live_frame_is_acked_at_once(tmp_path: Path) -> None:
    a, b, wire, space = live_pair(tmp_path, dataclasses.replace(LIVE, ack_delay=0.0))
    with a, b:
        before = len(acks(wire, "b>a"))
        for i in range(3):
            edit(wire, a, space, f"live-{i}")
        assert acks(wire, "b>a")[before:] == batches(wire, "a>b")[-3:]


def test_closing_acknowledges_what_waits(tmp_path: Path) -> None:
    a, b, wire, space = live_pair(tmp_path, LIVE)
    with a, b:
        edit(wire, a, space, "live-1")
        assert wire.a.envelopes_acked < wire.a.envelopes_out
        wire.run([], wire.b.going_away(wire.now))  # its last ACKs name everything it holds
        assert wire.a.envelopes_acked == wire.a.envelopes_out


def test_a_relay_never_delays_its_acks(tmp_path: Path) -> None:
    """A relay's ACK means "stored durably": a device waits for it, so it never waits."""
    assert RELIABLE_LINK.ack_delay > 0
    relay = RelayServer(RelayConfig(data=tmp_path / "relay", host="127.0.0.1", port=0))
    assert relay.session_config.ack_delay == 0.0
