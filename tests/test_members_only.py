"""Members-only device sessions (docs/DESIGN.md, "Who a device serves").

A device serves a space only to a peer that may read it now, judged by the space's
membership log at each read: a stranger that knows the id, a neighbour that says it is a
relay, a member revoked in the middle of a session get nothing of it, not even ciphertext;
a grant that arrives in the middle of a session opens it. Real replicas on real data
directories, real sessions over an in-order wire.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.protocol import Session
from crdt_sync.protocol.messages import Envelopes, ForkProof, Have
from tests.helpers import share
from tests.sync_helpers import Wire, fill


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[Replica, Replica, Replica]]:
    a, b, x = (Replica(tmp_path / n, seal_interval=0) for n in ("a", "b", "x"))
    try:
        yield a, b, x
    finally:
        for r in (a, b, x):
            r.close()


def _served(wire: Wire, direction: str) -> int:
    """Envelopes sent one way over the wire."""
    return sum(len(m.envelopes) for m in wire.sent(direction) if isinstance(m, Envelopes))


def _named_chains(wire: Wire, direction: str) -> int:
    return sum(len(m.vv) for m in wire.sent(direction) if isinstance(m, Have))


def test_a_device_that_only_knows_the_id_gets_nothing_of_the_space(
        trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, x = trio
    space = share(a, b)
    fill(a, "a", 5, space)
    x.keep(space)  # it knows the id (overheard), holds no grant and no key
    for host in (a.session_host(trust_relays=False), a.sync_host):  # neighbour, or a relay link
        wire = Wire(Session(host, 0.0), Session(x.sync_host, 0.0))
        wire.start()
        assert wire.a.synced and wire.b.synced, "the session ends: nothing is owed"
        assert _served(wire, "a>b") == 0 and _named_chains(wire, "a>b") == 0
        assert not any(isinstance(m, ForkProof) for m in wire.sent("a>b"))
    assert sum(x.version_vector(space).values()) == 0
    # a member is served in full by the same host code
    wire = Wire(Session(a.session_host(trust_relays=False), 0.0), Session(b.sync_host, 0.0))
    wire.start()
    assert b.version_vector(space) == a.version_vector(space)


def test_a_neighbour_that_claims_to_be_a_relay_gets_nothing(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, x = trio
    space = share(a, b)
    fill(a, "a", 3, space)
    x.keep(space)
    claimer = x.sync_host
    claimer.keeps_all_spaces = True  # its HELLO says "relay": it answers with the ids a names
    wire = Wire(Session(a.session_host(trust_relays=False), 0.0), Session(claimer, 0.0))
    wire.start()
    assert _served(wire, "a>b") == 0 and _named_chains(wire, "a>b") == 0
    # Over a link to a relay the user chose, the same claim is believed: a relay stores
    # what it cannot read, and enforces membership itself.
    claimer = x.sync_host
    claimer.keeps_all_spaces = True
    wire = Wire(Session(a.sync_host, 0.0), Session(claimer, 0.0))
    wire.start()
    assert _served(wire, "a>b") == sum(a.version_vector(space).values())


def test_a_member_revoked_in_the_session_gets_nothing_more(trio: tuple[Replica, Replica, Replica]) -> None:
    a, b, _ = trio
    space = share(a, b)
    fill(a, "a", 2, space)
    wire = Wire(Session(a.session_host(trust_relays=False), 0.0), Session(b.sync_host, 0.0))
    wire.start()
    assert b.version_vector(space) == a.version_vector(space)
    before = sum(b.version_vector(space).values())
    a.revoke(space, b.device_id)
    fill(a, "after", 3, space)
    wire.run(wire.a.local_changed(1.0), [])
    assert sum(b.version_vector(space).values()) == before, "nothing after the revocation was sent"
    assert wire.a.closed is None and wire.a.synced, "the session goes on, owing b nothing"


def test_a_grant_in_the_session_opens_the_space(trio: tuple[Replica, Replica, Replica]) -> None:
    a, _, x = trio
    space = share(a)
    fill(a, "a", 3, space)
    x.keep(space)
    wire = Wire(Session(a.session_host(trust_relays=False), 0.0), Session(x.sync_host, 0.0))
    wire.start()
    assert sum(x.version_vector(space).values()) == 0
    a.grant(space, x.device_id, "write")
    wire.run(wire.a.local_changed(1.0), [])
    assert x.version_vector(space) == a.version_vector(space)
    assert x.space(space).get("equipment", "a-2") == {"n": 2, "by": "a"}


def test_a_joiner_let_in_mid_session_is_not_synced_before_it_holds_the_space(
        trio: tuple[Replica, Replica, Replica]) -> None:
    """A new member joins by invite: its first HAVE from the admin shows it nothing (it is not
    let in yet), its redemption then lets it in and the admin streams the space. Its session
    must not count the space synced (and a one-shot sync end) before it holds what the admin
    now shows it: the admin renews its HAVE (reproduced first: synced holding 1 of 124)."""
    from crdt_sync.protocol.config import RELIABLE_LINK

    a, _, x = trio
    space = share(a)
    fill(a, "a", 120, space)
    x.join(a.invite(space, rights="write"))
    config = dataclasses.replace(RELIABLE_LINK, window=1, batch_count=8)
    wire = Wire(Session(a.session_host(trust_relays=False), 0.0, config), Session(x.sync_host, 0.0, config))
    early: list[dict[str, int]] = []

    def watch(_direction: str, frame: bytes) -> list[bytes]:
        if wire.b.synced and not early and x.version_vector(space) != a.version_vector(space):
            early.append(x.version_vector(space))
        return [frame]
    wire.tamper = watch
    wire.start()
    wire.run(wire.a.local_changed(1.0), [])  # what the driver does once the admin's store changed
    assert x.version_vector(space) == a.version_vector(space)
    assert early == [], f"synced holding {sum(early[0].values())} of {sum(a.version_vector(space).values())}"
