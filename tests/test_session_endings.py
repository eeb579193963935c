"""The decisions the driver asks the session for: when a one-shot session ends, how it ends
when the link closes or time runs out, and which frames wait for the host's commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.protocol import Closed, Session
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_NORMAL,
    E_TIMEOUT,
    Ack,
    Auth,
    Bye,
    Envelopes,
    Error,
    ErrorCode,
    Have,
    Message,
    Ping,
    Pong,
    Spaces,
    decode,
    encode,
)
from crdt_sync.protocol.session import CommitOrder
from tests.sync_helpers import Wire, fill


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    a, b = (Replica(tmp_path / n, seal_interval=0) for n in ("a", "b"))
    try:
        fill(a, "a", 2)
        fill(b, "b", 1)
        yield a, b
    finally:
        a.close()
        b.close()


def _closings(session: Session) -> list[Closed]:
    return [e for e in session.pop_events() if isinstance(e, Closed)]


def test_a_one_shot_session_ends_normally_once_synced(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    wire = Wire(Session(a.sync_host, 0.0), Session(b.sync_host, 0.0))
    assert wire.a.end_if_synced(0.0) is None  # nothing crossed yet
    wire.start()
    assert wire.a.synced
    last = wire.a.end_if_synced(1.0)
    assert last is not None
    assert [type(decode(f)) for f in last] == [Ack, Bye]
    assert decode(last[-1]) == Bye(E_NORMAL)
    assert wire.a.closed == Closed(E_NORMAL, "normal", by_peer=False)
    assert wire.a.end_if_synced(2.0) is None  # once


def test_going_away_says_bye_going_away(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    wire = Wire(Session(a.sync_host, 0.0), Session(b.sync_host, 0.0))
    wire.start()
    frames = wire.a.going_away(1.0)
    assert decode(frames[-1]) == Bye(E_GOING_AWAY)
    wire.run(frames, [])
    assert wire.b.closed is not None and wire.b.closed.by_peer
    assert wire.b.closed.code is ErrorCode.GOING_AWAY
    assert not wire.b.peer_listening and wire.a.peer_listening


def test_a_lost_link_and_an_expired_limit_end_the_session_without_a_frame(
        pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    lost, expired = Session(a.sync_host, 0.0), Session(b.sync_host, 0.0)
    lost.link_lost()
    expired.expire(2.5)
    assert _closings(lost) == [Closed(E_GOING_AWAY, "the link closed", by_peer=True, link_lost=True)]
    assert _closings(expired) == [Closed(E_TIMEOUT, "not synced after 2.5 s", by_peer=False)]
    for session in (lost, expired):
        assert session.closed is not None
        assert session.peer_listening  # the peer never said goodbye
        session.link_lost()  # an ended session ends once
        assert _closings(session) == []
        assert session.close(3.0) == [] and session.tick(3.0) == []


@pytest.mark.parametrize(("message", "order"), [
    (Ping(1), CommitOrder.FREE), (Pong(1), CommitOrder.FREE), (Auth(bytes(32), bytes(64)), CommitOrder.FREE),
    (Spaces([bytes(16)]), CommitOrder.FREE), (Envelopes(0, 1, []), CommitOrder.FREE),
    (Ack(0, 1, []), CommitOrder.AFTER_COMMIT),
    (Have(0, []), CommitOrder.BARRIER), (Error(E_TIMEOUT, "late"), CommitOrder.BARRIER),
    (Bye(E_NORMAL), CommitOrder.BARRIER),
])
def test_only_frames_that_claim_what_the_host_stored_wait_for_its_commit(
        pair: tuple[Replica, Replica], message: Message, order: CommitOrder) -> None:
    session = Session(pair[0].sync_host, 0.0)
    assert session.commit_order(encode(message)) is order
    assert session.commit_order(session.start()[0]) is CommitOrder.FREE  # HELLO

