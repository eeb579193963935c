"""Issue 12, "Show it works", through real processes: a ``crdt-sync relay`` subprocess that
enforces membership, and devices that are ``crdt-sync`` commands on their own data
directories, syncing over loopback.

- the relay's files and logs hold none of the plaintext the devices wrote, and what it
  stores is encrypted: the space key from a member's key file opens a stored payload, no key
  or a wrong key does not;
- a stranger who knows the space id gets nothing of it (not even ciphertext) and cannot
  push into it;
- a read-only member's write is refused by its own device, by the relay, and by the other
  devices when a relay that does not enforce passes it on;
- a reused invite voids both redemptions;
- a revoked device is refused, and cannot decrypt what is written after its revocation;
- the removal race: a write the revoking admin had not seen is dropped everywhere, even
  where it was applied before (docs/DESIGN.md, "The removal race").

Each attack is also run against a relay that does not enforce (``enforce=False``) where
that is how the defence is shown to matter: there the attack succeeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_sync.errors import Rejected
from crdt_sync.space_crypto import decrypt_payload, new_key, payload_kind
from tests.e2e_helpers import (
    DATA_THROUGH,
    Device,
    authors,
    create,
    forge_data,
    head,
    holds,
    invite,
    leaks,
    let_in,
    logged,
    made_body,
    needs,
    relay,
    stop,
    stored,
    tag,
    through,
)
from tests.relay_envelopes import EnvelopeHost, exchange

pytestmark = [needs("encrypted", "create_space", "members"), pytest.mark.timeout(240)]
invites = needs("invite", "join")
revokes = needs("invite", "join", "revoke")


async def test_the_relay_holds_only_ciphertext_that_the_space_key_opens(tmp_path: Path) -> None:
    name, collection, entity, field = tag("site"), tag("equipment"), tag("pump"), tag("status")
    first, second = tag("leaking"), tag("repaired")
    alice, bob = Device(tmp_path / "alice"), Device(tmp_path / "bob")
    data = tmp_path / "relay"
    async with relay(data) as process:
        sid = await create(alice, name, [(collection, entity, f"{field}={first}")])
        await let_in(alice, bob, sid, process.url)  # (by an invite where devices have them)
        assert await bob.ok("get", name, collection, entity) == {field: first}  # by the name
        await bob.ok("put", sid, collection, entity, f"{field}={second}")
        await bob.sync(process.url)
        await alice.sync(process.url)
        assert await alice.ok("get", sid, collection, entity) == {field: second}
        await stop(process)  # its log is complete, its database checkpointed

    # The operator greps everything the relay wrote: files and log lines.
    assert stored(data, sid), "the relay stored nothing: the grep below would prove nothing"
    assert leaks(data, [name, collection, entity, field, first, second], process.lines) == []
    assert leaks(data, [sid]) != []  # (the space id is metadata the relay keeps: the grep works)

    # Encrypted, not encoded: alice's key opens a stored payload; no key, a wrong key do not.
    kinds = {payload_kind(e.payload) for e in stored(data, sid)}
    assert kinds <= {3, 4} and 3 in kinds, kinds
    keyring = alice.keyring()
    opened = [decrypt_payload(keyring.keys_of(sid), sid, e.author_key, e.seq, e.payload)
              for e in stored(data, sid) if payload_kind(e.payload) == 3]
    assert any(second.encode() in body for body in opened)
    env = next(e for e in stored(data, sid) if payload_kind(e.payload) == 3)
    for keys, reason in [(lambda _e: None, "no-key"), (lambda _e: new_key(), "undecryptable")]:
        with pytest.raises(Rejected) as refused:
            decrypt_payload(keys, sid, env.author_key, env.seq, env.payload)
        assert refused.value.reason == reason
    # (the keys are in members' key files only: none of them is anywhere in the relay's)
    secrets = [keyring.secret(sid), *(keyring.key(sid, e) for _n, e in keyring.epochs(sid))]
    assert all(secrets) and not holds(data, [k for k in secrets if k is not None])


@pytest.mark.parametrize("kind", DATA_THROUGH)
async def test_a_stranger_can_neither_pull_nor_push(tmp_path: Path, kind: str) -> None:
    collection, entity, value = tag("equipment"), tag("pump"), tag("ok")
    alice, stranger = Device(tmp_path / "alice"), Device(tmp_path / "stranger")
    await stranger.init()
    intruder = stranger.identity()
    sid = await create(alice, tag("site"), [(collection, entity, f"status={value}")])
    body = made_body(tmp_path / "scratch", collection, entity, {"status": tag("overwritten")})
    data = tmp_path / "relay"
    async with through(kind, data) as process:
        await alice.sync(process.url)
        pull = EnvelopeHost(intruder, spaces=[sid])  # the stranger names the space id
        assert (await exchange(pull, process.url)).ok
        # A well-formed, properly encrypted write (the stranger even stole the key).
        write = forge_data(intruder, sid, body, alice.keyring(), (0, b""))
        push = EnvelopeHost(intruder, write)
        assert (await exchange(push, process.url)).ok
        if kind == "enforcing":
            assert pull.got(sid) == [] and pull.proofs == {}  # an empty space, no ciphertext
            assert push.reasons() == {"not-a-member"}
            assert intruder.id not in authors(data, sid)
        else:  # the attack works on a relay that does not enforce (so the defence matters) ...
            assert pull.got(sid), "a relay that does not enforce serves the stranger"
            assert intruder.id in authors(data, sid)
        # ... and alice's device refuses the stranger's write either way.
        await alice.sync(process.url)
        assert await alice.ok("get", sid, collection, entity) == {"status": value}
        if kind == "careless":
            await logged(process, "author.refused-by-peer", author=intruder.id, reason="not-a-member")


@invites
@needs("authorizes")
async def test_a_read_only_members_write_is_refused_by_the_relay_and_every_device(tmp_path: Path) -> None:
    collection, entity, value = tag("equipment"), tag("pump"), tag("ok")
    alice, bob, carol = (Device(tmp_path / n) for n in ("alice", "bob", "carol"))
    sid = await create(alice, tag("site"), [(collection, entity, f"status={value}")])
    body = made_body(tmp_path / "scratch", collection, entity, {"status": tag("overwritten")})
    async with relay(tmp_path / "relay") as enforcing, relay(tmp_path / "open", enforce=False) as careless:
        await invite(alice, bob, sid, enforcing.url)
        await invite(alice, carol, sid, enforcing.url, rights="read")
        assert await carol.ok("get", sid, collection, entity) == {"status": value}  # it reads

        # Its own device refuses the write, with the reason and what to do.
        code, error = await carol.refused("put", sid, collection, entity, "status=mine")
        assert (code, error["kind"]) == (5, "read-only"), error

        # A modified device signs it anyway: the relay refuses it, stores nothing of it.
        reader = carol.identity()
        write = forge_data(reader, sid, body, carol.keyring(), head(tmp_path / "relay", sid, reader.id))
        push = EnvelopeHost(reader, write)
        assert (await exchange(push, enforcing.url)).ok
        assert push.reasons() == {"read-only"}
        assert reader.id not in authors(tmp_path / "relay", sid)

        # Through a relay that passes it on, every other device refuses it, and says why.
        for device in (alice, bob):
            await device.sync(careless.url)
        assert (await exchange(EnvelopeHost(reader, write), careless.url)).ok
        assert reader.id in authors(tmp_path / "open", sid)
        for device in (alice, bob):
            await device.sync(careless.url)
            assert await device.ok("get", sid, collection, entity) == {"status": value}
            peer = device.identity().id
            await logged(careless, "author.refused-by-peer", peer=peer, author=reader.id, reason="read-only")


@invites
async def test_a_reused_invite_admits_no_one(tmp_path: Path) -> None:
    collection, entity, value = tag("equipment"), tag("pump"), tag("ok")
    alice, bob, carol = (Device(tmp_path / n) for n in ("alice", "bob", "carol"))
    sid = await create(alice, tag("site"), [(collection, entity, f"status={value}")])
    async with relay(tmp_path / "relay") as process:
        token = (await alice.ok("invite", sid, "--rights", "write"))["token"]
        await alice.sync(process.url)
        bob_id = (await bob.ok("join", token))["device"]
        await bob.sync(process.url)
        assert await bob.ok("get", sid, collection, entity) == {"status": value}
        carol_id = (await carol.ok("join", token))["device"]  # the token, leaked, used again
        await carol.sync(process.url)
        await alice.sync(process.url)
        await bob.sync(process.url)
        # Both void, and visible to the admin (docs/DESIGN.md, "Single-use invites").
        members = {m["device"]: m for m in (await alice.ok("members", sid))["members"]}
        assert members[bob_id]["reused_invite"], members
        assert carol_id not in members or members[carol_id]["reused_invite"], members
        # Neither is served anything more, nor may write.
        later = tag("later")
        await alice.ok("put", sid, collection, entity, f"status={later}")
        await alice.sync(process.url)
        for device in (bob, carol):
            pull = EnvelopeHost(device.identity(), spaces=[sid])
            assert (await exchange(pull, process.url)).ok
            assert pull.got(sid) == [], f"{device.name} is still served"


@revokes
async def test_a_revoked_device_is_refused_and_cannot_read_what_follows(tmp_path: Path) -> None:
    collection, entity = tag("equipment"), tag("pump")
    before, after, sabotage = tag("ok"), tag("replaced"), tag("sabotaged")
    alice, bob, carol = (Device(tmp_path / n) for n in ("alice", "bob", "carol"))
    data = tmp_path / "relay"
    sid = await create(alice, tag("site"), [(collection, entity, f"status={before}")])
    async with relay(data) as process:
        bob_id = await invite(alice, bob, sid, process.url)
        await invite(alice, carol, sid, process.url)
        assert await bob.ok("get", sid, collection, entity) == {"status": before}

        held = {e.hash for e in stored(data, sid)}
        revoked = await alice.ok("revoke", sid, bob_id)
        assert revoked["rotated"] is True
        await alice.ok("put", sid, collection, entity, f"status={after}")
        await alice.sync(process.url)
        members = {m["device"]: m for m in (await alice.ok("members", sid))["members"]}
        assert members[bob_id]["revoked_after"] is not None

        # Bob is served nothing more: what alice wrote after the revocation never reaches him.
        await bob.sync(process.url)
        assert await bob.ok("get", sid, collection, entity) == {"status": before}
        # ... and what the relay holds of it, stolen, is not readable with bob's keys.
        later = [e for e in stored(data, sid) if payload_kind(e.payload) == 3 and e.hash not in held]
        assert later, "alice's write after the revocation is not on the relay"
        await carol.sync(process.url)  # the new epoch's key, sealed to carol in the revocation
        for env in later:
            with pytest.raises(Rejected) as refused:
                decrypt_payload(bob.keyring().keys_of(sid), sid, env.author_key, env.seq, env.payload)
            assert refused.value.reason == "no-key"
            decrypt_payload(carol.keyring().keys_of(sid), sid, env.author_key, env.seq, env.payload)

        # Bob, who does not know, writes: the relay refuses it; carol never sees it.
        await bob.ok("put", sid, collection, entity, f"status={sabotage}")
        await bob.sync(process.url)
        await logged(process, "author.quarantined", author=bob_id, reason="revoked")
        await carol.sync(process.url)
        assert await carol.ok("get", sid, collection, entity) == {"status": after}


@revokes
async def test_the_removal_race_drops_what_the_revoking_admin_had_not_seen(tmp_path: Path) -> None:
    """docs/DESIGN.md, "The removal race": the revocation cuts bob's chain at the last seq
    alice held (``after_seq``); a write bob made after it is dropped everywhere, even by
    carol who had applied it; his writes before the cut stay."""
    collection, entity, other = tag("equipment"), tag("pump"), tag("valve")
    seen, unseen = tag("seen"), tag("unseen")
    alice, bob, carol = (Device(tmp_path / n) for n in ("alice", "bob", "carol"))
    sid = await create(alice, tag("site"), [(collection, entity, "status=new")])
    async with relay(tmp_path / "relay") as process:
        bob_id = await invite(alice, bob, sid, process.url)
        await invite(alice, carol, sid, process.url)
        await bob.ok("put", sid, collection, other, f"status={seen}")
        await bob.sync(process.url)
        await alice.sync(process.url)  # alice holds bob's chain up to here
        await bob.ok("put", sid, collection, entity, f"status={unseen}")  # alice never sees it
        await bob.sync(process.url)
        await carol.sync(process.url)
        assert await carol.ok("get", sid, collection, entity) == {"status": unseen}  # applied

        await alice.ok("revoke", sid, bob_id)  # offline: alice has not synced since
        await alice.sync(process.url)
        await carol.sync(process.url)
        for device in (alice, carol):
            assert await device.ok("get", sid, collection, entity) == {"status": "new"}, device.name
            assert await device.ok("get", sid, collection, other) == {"status": seen}, device.name
