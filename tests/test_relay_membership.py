"""The relay enforces membership without reading payloads (docs/RELAY.md, "Membership"):
hand-made spaces (tests/relay_envelopes.py) pushed and pulled through a real relay over
loopback. Who may write is judged on every envelope; a space is served only to devices
that may read it, and to anyone else it looks empty."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from crdt_sync.membership import Rights
from crdt_sync.protocol.messages import E_AUTH_FAILED
from crdt_sync.relay.host import RelayHost
from crdt_sync.relay.server import RelayServer
from crdt_sync.relay.sqlite_store import DB_NAME, SCHEMA_VERSION
from crdt_sync.relay.storage import RELAY_DB, RelayStore
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, hlc_at, identity, now_ms
from tests.relay_helpers import FAST, sample, scrape
from tests.relay_helpers import running_relay as plain_relay


def running_relay(data: Path, *args: object, **settings: object):  # type: ignore[no-untyped-def]
    """A relay that enforces membership (the setting ``membership``, on by default, here explicit)."""
    return plain_relay(data, *args, membership=True, **settings)  # type: ignore[arg-type]

DAY_MS = 24 * 3600 * 1000


def hashes(host: EnvelopeHost, space: str, exclude: str | None = None) -> set[bytes]:
    return {e.hash for e in host.got(space, exclude)}


def quarantine_reasons(relay: RelayServer, space: str) -> dict[str, str]:
    return {q.author: q.reason for q in relay.store.quarantine.list(space)}


async def settle(relay: RelayServer) -> None:
    await relay.store.commit()


async def test_members_are_served_and_a_stranger_gets_nothing(tmp_path: Path) -> None:
    admin, bob, stranger = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    mine = [sp.open(), sp.data(admin), sp.grant(bob.public_key)]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        outcome = await exchange(EnvelopeHost(admin, *mine), relay.url)
        assert outcome.ok, outcome.closed
        bob_host = EnvelopeHost(bob, sp.data(bob))
        outcome = await exchange(bob_host, relay.url)
        assert outcome.ok, outcome.closed
        assert hashes(bob_host, sp.space, bob.id) == {e.hash for e in mine}
        assert not bob_host.refused

        # The stranger pulls: nothing, not even ciphertext; it pushes: not stored.
        pull = EnvelopeHost(stranger, spaces=[sp.space])
        outcome = await exchange(pull, relay.url)
        assert outcome.ok, outcome.closed
        assert pull.got(sp.space) == [] and pull.proofs == {}
        push = EnvelopeHost(stranger, sp.data(stranger))
        outcome = await exchange(push, relay.url)
        assert outcome.ok, outcome.closed
        assert push.got(sp.space, stranger.id) == []
        assert push.reasons() == {"not-a-member"}
        await settle(relay)
        assert stranger.id not in relay.store.version_vector(sp.space)
        assert quarantine_reasons(relay, sp.space) == {}  # skipped like a gap: no quarantine row
        assert relay.store.version_vector(sp.space) == {admin.id: 3, bob.id: 1}


async def test_a_read_only_member_reads_but_its_writes_are_refused(tmp_path: Path) -> None:
    admin, reader = identity(), identity()
    sp = SpaceMaker(admin)
    mine = [sp.open(), sp.grant(reader.public_key, Rights.READ), sp.data(admin)]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *mine), relay.url)).ok
        host = EnvelopeHost(reader, sp.data(reader))
        outcome = await exchange(host, relay.url)
        assert outcome.ok, outcome.closed
        assert hashes(host, sp.space, reader.id) == {e.hash for e in mine}
        assert host.reasons() == {"read-only"}
        await settle(relay)
        assert reader.id not in relay.store.version_vector(sp.space)


async def test_an_expired_write_grant_refuses_what_is_dated_after_it(tmp_path: Path) -> None:
    admin, bob = identity(), identity()
    sp = SpaceMaker(admin)
    ends = now_ms() + 60_000
    mine = [sp.open(), sp.grant(bob.public_key, Rights.WRITE, not_after_ms=ends)]
    before, after = sp.data(bob), sp.data(bob, hlc=hlc_at(ends + 60_000))
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *mine), relay.url)).ok
        host = EnvelopeHost(bob, before, after)
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"expired"}
        await settle(relay)
        assert relay.store.version_vector(sp.space)[bob.id] == 1


async def test_a_forged_grant_quarantines_its_author(tmp_path: Path) -> None:
    admin, mallory = identity(), identity()
    sp = SpaceMaker(admin)
    # Mallory grants itself admin, quoting the genesis as if it were the creator.
    forged = sp.grant_record(mallory.public_key, Rights.ADMIN, issuer=mallory, proof=sp.genesis.hash)
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, sp.open()), relay.url)).ok
        host = EnvelopeHost(mallory, sp.carry(mallory, [forged]), sp.data(mallory))
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"forged"}
        assert host.got(sp.space, mallory.id) == []
        await settle(relay)
        assert quarantine_reasons(relay, sp.space) == {mallory.id: "forged"}
        assert mallory.id not in relay.store.version_vector(sp.space)


async def test_a_delegation_beyond_the_delegators_rights_is_refused(tmp_path: Path) -> None:
    admin, bob, carol = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    ends = now_ms() + DAY_MS
    mine = [sp.open(), sp.grant(bob.public_key, Rights.ADMIN, not_after_ms=ends)]
    # Bob's admin grant ends tomorrow; the grant he makes for Carol never does.
    beyond = sp.grant(carol.public_key, Rights.WRITE, issuer=bob, not_after_ms=0)
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *mine), relay.url)).ok
        host = EnvelopeHost(bob, beyond)
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"beyond-delegation"}
        carol_host = EnvelopeHost(carol, spaces=[sp.space])
        assert (await exchange(carol_host, relay.url)).ok
        assert carol_host.got(sp.space) == []
        await settle(relay)
        assert quarantine_reasons(relay, sp.space) == {bob.id: "beyond-delegation"}


async def test_a_grant_replayed_into_another_space_is_refused(tmp_path: Path) -> None:
    admin, mallory = identity(), identity()
    site_a, site_b = SpaceMaker(admin), SpaceMaker(admin)
    opening_a, opening_b = site_a.open(), site_b.open()
    grant_a = site_a.grant_record(mallory.public_key, Rights.WRITE)
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, opening_a, site_a.carry(admin, [grant_a]), opening_b),
                               relay.url)).ok
        # Mallory carries its grant of site A into site B: not its record to carry.
        host = EnvelopeHost(mallory, site_b.carry(mallory, [grant_a]))
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"misplaced-record"}
        assert host.got(site_b.space, mallory.id) == []
        # The admin's own chain in B carrying A's grant (a replay by a faulty device).
        replay = EnvelopeHost(admin, opening_b, site_b.carry(admin, [grant_a]))
        assert (await exchange(replay, relay.url)).ok
        assert replay.reasons() == {"wrong-space"}
        await settle(relay)
        assert quarantine_reasons(relay, site_b.space) == {mallory.id: "misplaced-record",
                                                           admin.id: "wrong-space"}
        # Mallory reads site A (its grant is there), not site B.
        reads = EnvelopeHost(mallory, spaces=[site_a.space, site_b.space])
        assert (await exchange(reads, relay.url)).ok
        assert reads.got(site_a.space) and not reads.got(site_b.space)


async def test_a_reused_invite_voids_both_redemptions(tmp_path: Path) -> None:
    admin, bob, carol = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    opening = sp.open()
    published, invite, one_time = sp.invite(Rights.WRITE)
    first = sp.redeem(invite, one_time, bob.public_key)
    second = sp.redeem(invite, one_time, carol.public_key)  # the same token, again
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, opening, published, sp.data(admin)), relay.url)).ok
        bob_host = EnvelopeHost(bob, first)
        assert (await exchange(bob_host, relay.url)).ok
        assert bob_host.got(sp.space, one_time.id)  # redeemed: served
        carol_host = EnvelopeHost(carol, second)
        assert (await exchange(carol_host, relay.url)).ok
        assert carol_host.got(sp.space, one_time.id) == []
        # Carol pushed that chain: she gets its fork proof (and nothing else of the space).
        assert len(carol_host.proofs.get(sp.space, [])) == 1
        await settle(relay)
        assert quarantine_reasons(relay, sp.space) == {one_time.id: "fork"}
        for device in (bob, carol):
            again = EnvelopeHost(device, spaces=[sp.space])
            assert (await exchange(again, relay.url)).ok
            assert again.got(sp.space) == [], f"{device.id} is still served"


async def test_a_revoked_device_is_refused_past_the_cut_and_gets_nothing_more(tmp_path: Path) -> None:
    admin, bob, carol = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    setup = [sp.open(), sp.grant(bob.public_key), sp.grant(carol.public_key)]
    bob_writes = [sp.data(bob), sp.data(bob)]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *setup), relay.url)).ok
        assert (await exchange(EnvelopeHost(bob, *bob_writes), relay.url)).ok
        revoke = sp.revoke(bob, after_seq=2, readers=[admin.public_key, carol.public_key])
        later = sp.data(admin)  # epoch 1: after the rotation
        assert (await exchange(EnvelopeHost(admin, *setup, revoke, later), relay.url)).ok
        # Bob, offline, wrote a third envelope: stored, set aside, and he is told.
        past = sp.data(bob, epoch=0)
        host = EnvelopeHost(bob, *bob_writes, past, spaces=[sp.space])
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"revoked"}
        assert host.got(sp.space, bob.id) == []  # nothing of the space, not even the old
        await settle(relay)
        assert relay.store.version_vector(sp.space)[bob.id] == 3
        assert quarantine_reasons(relay, sp.space) == {}
        # Carol gets Bob's writes up to the cut, not the one past it.
        carol_host = EnvelopeHost(carol, spaces=[sp.space])
        assert (await exchange(carol_host, relay.url)).ok
        got = hashes(carol_host, sp.space)
        assert {e.hash for e in bob_writes} | {revoke.hash, later.hash} <= got
        assert past.hash not in got


async def test_a_revoked_live_session_gets_nothing_more(tmp_path: Path) -> None:
    admin, bob, carol = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    setup = [sp.open(), sp.grant(bob.public_key), sp.grant(carol.public_key)]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *setup), relay.url)).ok
        stop = asyncio.Event()
        bob_host, carol_host = EnvelopeHost(bob, spaces=[sp.space]), EnvelopeHost(carol, spaces=[sp.space])
        before, revoke = sp.data(admin), None
        async with asyncio.TaskGroup() as tg:
            for h in (bob_host, carol_host):
                tg.create_task(exchange(h, relay.url, live_until=stop))
            try:
                await bob_host.until(lambda: len(bob_host.got(sp.space)) == 3, "bob's first pull")
                await carol_host.until(lambda: len(carol_host.got(sp.space)) == 3, "carol's first pull")
                assert (await exchange(EnvelopeHost(admin, *setup, before), relay.url)).ok
                await bob_host.until(lambda: before.hash in hashes(bob_host, sp.space), "fan-out to bob")
                revoke = sp.revoke(bob, after_seq=0, readers=[admin.public_key, carol.public_key])
                after = sp.data(admin)
                assert (await exchange(EnvelopeHost(admin, *setup, before, revoke, after), relay.url)).ok
                await carol_host.until(lambda: after.hash in hashes(carol_host, sp.space), "fan-out to carol")
            finally:
                stop.set()
        assert revoke is not None
        assert not {revoke.hash, after.hash} & hashes(bob_host, sp.space)


async def test_plaintext_is_refused(tmp_path: Path) -> None:
    admin = identity()
    sp = SpaceMaker(admin)
    async with running_relay(tmp_path / "relay", FAST) as relay:
        host = EnvelopeHost(admin, sp.open(), sp.plaintext(admin))
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"plaintext"}
        await settle(relay)
        assert quarantine_reasons(relay, sp.space) == {admin.id: "plaintext"}
        assert relay.store.version_vector(sp.space) == {admin.id: 1}


async def test_an_unknown_proof_is_skipped_until_it_arrives(tmp_path: Path) -> None:
    admin, bob = identity(), identity()
    sp = SpaceMaker(admin)
    opening, grant = sp.open(), sp.grant(bob.public_key)
    async with running_relay(tmp_path / "relay", FAST) as relay:
        # Bob's write arrives before anything of the space: skipped, no quarantine.
        early = EnvelopeHost(bob, sp.data(bob))
        assert (await exchange(early, relay.url)).ok
        assert early.reasons() == {"not-a-member"}
        # The grant without the genesis: its proof is unknown, so it is not stored either.
        orphan = EnvelopeHost(admin, opening, grant)
        orphan.held[sp.space].pop((admin.id, 1))
        orphan.order[sp.space].remove(opening)
        assert (await exchange(orphan, relay.url)).ok
        await settle(relay)
        assert relay.store.version_vector(sp.space) == {}
        assert quarantine_reasons(relay, sp.space) == {}
        # Then all of it, in order: both accepted.
        assert (await exchange(EnvelopeHost(admin, opening, grant), relay.url)).ok
        assert (await exchange(early, relay.url)).ok
        await settle(relay)
        assert relay.store.version_vector(sp.space) == {admin.id: 2, bob.id: 1}


async def test_a_restarted_relay_still_enforces(tmp_path: Path) -> None:
    admin, bob, carol, stranger = identity(), identity(), identity(), identity()
    sp = SpaceMaker(admin)
    setup = [sp.open(), sp.grant(bob.public_key), sp.grant(carol.public_key)]
    revoke = sp.revoke(carol, after_seq=0, readers=[admin.public_key, bob.public_key])
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *setup, revoke), relay.url)).ok
    # A new process: the logs are built again from the stored membership envelopes.
    async with running_relay(tmp_path / "relay", FAST) as relay:
        bob_host = EnvelopeHost(bob, sp.data(bob))
        assert (await exchange(bob_host, relay.url)).ok
        assert hashes(bob_host, sp.space, bob.id) == {e.hash for e in [*setup, revoke]}
        assert not bob_host.refused
        for device in (carol, stranger):
            host = EnvelopeHost(device, sp.data(device, epoch=0))
            assert (await exchange(host, relay.url)).ok
            assert host.got(sp.space, device.id) == []
            assert host.reasons() == {"revoked" if device is carol else "not-a-member"}


async def test_a_relay_store_from_before_schema_4_upgrades(tmp_path: Path) -> None:
    admin, bob = identity(), identity()
    sp = SpaceMaker(admin)
    setup = [sp.open(), sp.data(admin), sp.grant(bob.public_key)]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert (await exchange(EnvelopeHost(admin, *setup), relay.url)).ok
    # Back to schema 3: no membership index (what a relay of the previous release wrote).
    path = tmp_path / "relay" / RELAY_DB / DB_NAME
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE membership")
        db.execute("DROP TABLE space_snapshots")
        db.execute("DELETE FROM schema_migrations WHERE version>=4")
    async with running_relay(tmp_path / "relay", FAST) as relay:
        assert relay.store.store.schema_version == SCHEMA_VERSION == 5
        bob_host = EnvelopeHost(bob, spaces=[sp.space])
        assert (await exchange(bob_host, relay.url)).ok
        assert hashes(bob_host, sp.space) == {e.hash for e in setup}
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT space, author, seq FROM membership ORDER BY seq").fetchall() == [
            (sp.space, admin.id, 1), (sp.space, admin.id, 3)]
        assert [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")] == [
            1, 2, 3, 4, 5]


async def test_the_allow_list_applies_to_joining(tmp_path: Path) -> None:
    admin, joiner = identity(), identity()
    sp = SpaceMaker(admin)
    opening = sp.open()
    published, invite, one_time = sp.invite(Rights.WRITE)
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{admin.id}\n")
    async with running_relay(tmp_path / "relay", FAST, allow_list=allow) as relay:
        assert (await exchange(EnvelopeHost(admin, opening, published), relay.url)).ok
        host = EnvelopeHost(joiner, sp.redeem(invite, one_time, joiner.public_key))
        outcome = await exchange(host, relay.url)
        assert outcome.closed is not None and outcome.closed.code == E_AUTH_FAILED, outcome.closed
        assert host.got(sp.space, one_time.id) == []
        await settle(relay)
        assert one_time.id not in relay.store.version_vector(sp.space)
        # Once the operator lists it, the same token joins.
        allow.write_text(f"{admin.id}\n{joiner.id}\n")
        relay.reload_allow_list()
        assert (await exchange(host, relay.url)).ok
        assert hashes(host, sp.space, one_time.id) == {opening.hash, published.hash}


async def test_refusals_are_counted_and_a_malformed_ciphertext_quarantines(tmp_path: Path) -> None:
    admin, stranger = identity(), identity()
    sp = SpaceMaker(admin)
    opening = sp.open()
    bad = sp.envelope(admin, b"\x84\x03" + bytes(40))  # says kind 3, is not [3, epoch, nonce, ct]
    async with running_relay(tmp_path / "relay", FAST) as relay:
        host = EnvelopeHost(admin, opening, bad)
        assert (await exchange(host, relay.url)).ok
        assert host.reasons() == {"bad-payload"}
        assert (await exchange(EnvelopeHost(stranger, sp.data(stranger)), relay.url)).ok
        samples = await scrape(relay.url)
        assert sample(samples, "crdt_relay_rejections_total", reason="quarantined") == 1
        assert sample(samples, "crdt_relay_rejections_total", reason="membership") == 1
        await settle(relay)
        assert quarantine_reasons(relay, sp.space) == {admin.id: "bad-payload"}


def test_relay_peers_are_not_gated_and_strangers_see_nothing(tmp_path: Path) -> None:
    """The session's view (RelayHost), over a store without an event loop: a stranger is
    shown nothing of the space, a relay peer (the scale-out issue's nodes) everything."""
    admin, stranger, peer_relay = identity(), identity(), identity()
    sp = SpaceMaker(admin)
    store = RelayStore(tmp_path, enforce_membership=True)
    try:
        store.receive([sp.open().wire, sp.data(admin).wire], sp.space, False)
        hosts = {}
        for device in (stranger, peer_relay):
            host = hosts[device.id] = RelayHost(store, lambda d: None, lambda d, n, size: None,
                                                ungated={peer_relay.id}.__contains__)
            host.admit(device.id)
        closed, open_ = hosts[stranger.id], hosts[peer_relay.id]
        assert closed.version_vector(sp.space) == {} and not closed.reads(sp.space)
        assert closed.missing_envelopes(sp.space, {}, 10, 1 << 20) == []
        assert closed.outgoing(sp.space, {}, None, 10, 1 << 20) == ([], None)
        assert closed.envelope_wire(sp.space, admin.id, 1) is None
        assert open_.version_vector(sp.space) == {admin.id: 2}
        assert len(open_.missing_envelopes(sp.space, {}, 10, 1 << 20)) == 2
    finally:
        store.close()


async def test_a_joiner_gets_the_whole_space_in_the_session_that_lets_it_in(tmp_path: Path) -> None:
    """The relay shows a device it may not read an empty HAVE; once it stores the device's
    redemption it renews its HAVE, so the joiner's one-shot session does not end synced
    holding a few batches of the space (reproduced: it held 8 of 62 envelopes)."""
    import dataclasses

    admin, joiner = identity(), identity()
    sp = SpaceMaker(admin)
    opening = sp.open()
    published, invite, one_time = sp.invite(Rights.WRITE)
    data = [sp.data(admin) for _ in range(60)]
    small = dataclasses.replace(FAST, window=1, batch_count=4)
    async with running_relay(tmp_path / "relay", small) as relay:  # the relay sends 4 at a time
        assert (await exchange(EnvelopeHost(admin, opening, published, *data), relay.url)).ok
        host = EnvelopeHost(joiner, sp.redeem(invite, one_time, joiner.public_key))
        outcome = await exchange(host, relay.url)
        assert outcome.ok, outcome.closed
        got = hashes(host, sp.space, one_time.id)
        assert got == {e.hash for e in (opening, published, *data)}, f"held {len(got)} of {len(data) + 2}"
