"""Two relay stores on one Postgres database, as two relay nodes are: a race for a chain
position is decided by the database, a stale head is found at commit and judged again (the
same envelope: a duplicate; another one: a fork), and one node catches up on the other's
commits from the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import cbor2
import psycopg
import pytest

from crdt_sync.envelope import seal
from crdt_sync.relay.shared_store import SharedRelayStore
from crdt_sync.relay.storage import backend_for
from tests.relay_envelopes import SpaceMaker, hlc_at, identity, now_ms
from tests.sync_helpers import WAIT

Nodes = Callable[[str], SharedRelayStore]


@pytest.fixture
async def nodes(tmp_path: Path, pg_url: str) -> AsyncIterator[Nodes]:
    opened: list[SharedRelayStore] = []

    def node(name: str) -> SharedRelayStore:
        store = SharedRelayStore(tmp_path / name, backend=backend_for(pg_url), enforce_membership=False)
        opened.append(store)
        return store

    yield node
    for store in opened:
        store.close()


def rows(url: str, space: str) -> list[tuple[str, int, bytes]]:
    with psycopg.connect(url) as conn:
        return [(a, int(s), bytes(h)) for a, s, h in conn.execute(
            "SELECT author, seq, hash FROM envelopes WHERE space=%s ORDER BY author, seq", (space,))]


async def committed(store: SharedRelayStore) -> None:
    async with asyncio.timeout(WAIT):
        await store.commit()
        while store.dirty:  # a commit judged again is followed by the next one
            await store.commit()


async def test_two_nodes_racing_for_the_same_envelopes_store_them_once(nodes: Nodes, pg_url: str) -> None:
    maker = SpaceMaker(identity())
    envs = [maker.plaintext(maker.creator) for _ in range(5)]
    one, two = nodes("one"), nodes("two")
    wires = [e.wire for e in envs]
    assert one.accept(wires, maker.space).applied == 5
    assert two.accept(wires, maker.space).applied == 5  # each node judges from its own memory
    await asyncio.gather(committed(one), committed(two))
    assert [(s, h) for _, s, h in rows(pg_url, maker.space)] == [(e.seq, e.hash) for e in envs]
    assert one.conflicts == two.conflicts == 0  # the same envelopes: duplicates, no conflict


async def test_a_stale_head_is_judged_again_a_different_envelope_is_a_fork(nodes: Nodes, pg_url: str) -> None:
    maker = SpaceMaker(identity())
    author = maker.creator
    first = maker.plaintext(author)
    one, two = nodes("one"), nodes("two")
    one.accept([first.wire], maker.space)
    await committed(one)
    assert two.version_vector(maker.space) == {author.id: 1}  # two holds the space from here
    second = maker.plaintext(author)
    other = seal(author, maker.space, 2, first.hash, hlc_at(now_ms()),  # the author signs seq 2 twice
                 cbor2.dumps([2, [["site", "b", b"\x01"]]]))
    one.accept([second.wire], maker.space)
    await committed(one)
    assert two.version_vector(maker.space) == {author.id: 1}  # stale: one's commit is not in memory
    assert two.accept([other.wire], maker.space).applied == 1
    await committed(two)
    assert two.conflicts == 1
    assert two.fork_points(maker.space) == {author.id: 2}  # proven, as the chain rules say
    assert [s for _, s, _ in rows(pg_url, maker.space)] == [1]  # both branches dropped from seq 2
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT author, seq FROM forks").fetchall() == [(author.id, 2)]


async def test_a_stale_head_with_the_same_envelope_is_a_duplicate(nodes: Nodes, pg_url: str) -> None:
    maker = SpaceMaker(identity())
    author = maker.creator
    envs = [maker.plaintext(author) for _ in range(3)]
    one, two = nodes("one"), nodes("two")
    assert two.version_vector(maker.space) == {}
    one.accept([e.wire for e in envs[:2]], maker.space)
    await committed(one)
    assert two.accept([e.wire for e in envs], maker.space).applied == 3  # two did not know 1..2
    await committed(two)
    assert two.conflicts == 0 and two.fork_points(maker.space) == {}
    assert [s for _, s, _ in rows(pg_url, maker.space)] == [1, 2, 3]


async def test_a_node_catches_up_on_another_nodes_commits(nodes: Nodes) -> None:
    maker = SpaceMaker(identity())
    a, b = maker.creator, identity()
    one, two = nodes("one"), nodes("two")
    assert two.version_vector(maker.space) == {}
    _, cursor = two.outgoing(maker.space, {}, None, 100, 1 << 20)
    woken: list[str] = []
    two.on_append = woken.append
    one.accept([maker.plaintext(a).wire for _ in range(3)] + [maker.plaintext(b).wire], maker.space)
    await committed(one)
    assert await two.catch_up(maker.space) == 4
    assert woken == [maker.space]
    assert two.version_vector(maker.space) == one.version_vector(maker.space) == {a.id: 3, b.id: 1}
    out, _ = two.outgoing(maker.space, {}, cursor, 100, 1 << 20)  # from the tail, as local commits
    assert sorted((o[0], o[2]) for o in out) == sorted([(a.id, 1), (a.id, 2), (a.id, 3), (b.id, 1)])
    assert await two.catch_up(maker.space) == 0
    assert await two.catch_up("not-open") == 0
