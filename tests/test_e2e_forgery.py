"""Issue 12, "Show it works": capabilities that the CLI would never make, forged with the
keys a modified device holds and pushed through real relay connections, into a space that
real ``crdt-sync`` devices created and share (see tests/test_e2e_membership.py for the
set-up): an expired capability, a forged one (signed by a non-admin), a delegation beyond
the delegator's rights, a grant replayed into another space. Each is refused by a relay
process that enforces membership, and by the devices themselves when a relay that does not
enforce passes it on (the devices judge every membership record offline: docs/DESIGN.md,
"Membership").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_sync.identity import Identity
from crdt_sync.membership import Genesis, Grant, Rights, make_grant
from tests.e2e_helpers import (
    DATA_THROUGH,
    THROUGH,
    Device,
    authors,
    create,
    forge_data,
    forge_records,
    head,
    logged,
    made_body,
    membership_records,
    needs,
    stored,
    tag,
    through,
)
from tests.relay_envelopes import EnvelopeHost, exchange, hlc_at, now_ms

pytestmark = [needs("create_space", "grant", "members"), pytest.mark.timeout(240)]


def genesis_of(data: Path, space: str) -> Genesis:
    [genesis] = [r for r in membership_records(stored(data, space)) if isinstance(r, Genesis)]
    return genesis


def grant_of(data: Path, space: str, subject: Identity) -> Grant:
    """The grant of ``subject`` the relay holds (membership records are readable to it)."""
    [grant] = [r for r in membership_records(stored(data, space))
               if isinstance(r, Grant) and r.subject == subject.public_key]
    return grant


async def quarantined(device: Device, space: str) -> dict[str, str]:
    """Author -> reason of each chain ``device`` set aside in ``space``."""
    items = (await device.ok("quarantine", "list", space))["quarantined"]
    return {q["author"]: q["reason"] for q in items}


@pytest.mark.parametrize("kind", DATA_THROUGH)
async def test_an_expired_capability_is_refused(tmp_path: Path, kind: str) -> None:
    collection, entity, value = tag("equipment"), tag("pump"), tag("ok")
    alice, dave = Device(tmp_path / "alice"), Device(tmp_path / "dave")
    dave_id = await dave.init()
    sid = await create(alice, tag("site"), [(collection, entity, f"status={value}")])
    body = made_body(tmp_path / "scratch", collection, entity, {"status": tag("late")})
    await alice.ok("grant", sid, dave_id, "--rights", "write", "--expires", "90s")
    data = tmp_path / "relay"
    async with through(kind, data) as process:
        await alice.sync(process.url)
        member = dave.identity()
        # One write inside the grant, one dated (by its own clock) after it ended.
        inside = forge_data(member, sid, body, alice.keyring(), (0, b""))
        late = forge_data(member, sid, body, alice.keyring(), (1, inside.hash), hlc_at(now_ms() + 180_000))
        push = EnvelopeHost(member, inside, late)
        assert (await exchange(push, process.url)).ok
        if kind == "enforcing":
            assert push.reasons() == {"expired"}
            assert authors(data, sid)[member.id] == 1  # the one inside stays
        else:  # passed on: alice's device takes the first, refuses the late one and says why
            assert authors(data, sid)[member.id] == 2
            await alice.sync(process.url)
            await logged(process, "author.refused-by-peer", author=member.id, reason="expired")


@pytest.mark.parametrize("kind", THROUGH)
async def test_a_capability_signed_by_a_non_admin_is_refused(tmp_path: Path, kind: str) -> None:
    collection, entity, value = tag("equipment"), tag("pump"), tag("ok")
    alice, mallory = Device(tmp_path / "alice"), Device(tmp_path / "mallory")
    await mallory.init()
    sid = await create(alice, tag("site"), [(collection, entity, f"status={value}")])
    body = made_body(tmp_path / "scratch", collection, entity, {"status": tag("mine")})
    data = tmp_path / "relay"
    async with through(kind, data) as process:
        await alice.sync(process.url)
        intruder = mallory.identity()
        # Mallory grants itself admin, quoting the genesis as if it were the creator.
        forged = make_grant(intruder, sid, intruder.public_key, Rights.ADMIN, (), 0, hlc_at(now_ms()),
                            genesis_of(data, sid).hash)
        claim = forge_records(intruder, sid, [forged], (0, b""))
        write = forge_data(intruder, sid, body, alice.keyring(), (1, claim.hash))
        push = EnvelopeHost(intruder, claim, write)
        assert (await exchange(push, process.url)).ok
        if kind == "enforcing":
            assert push.reasons() == {"forged"}
            assert intruder.id not in authors(data, sid)
            pull = EnvelopeHost(intruder, spaces=[sid])
            assert (await exchange(pull, process.url)).ok
            assert pull.got(sid) == []
        else:  # passed on: alice's device quarantines mallory, and keeps its value
            assert intruder.id in authors(data, sid)
            await alice.sync(process.url)
            assert (await quarantined(alice, sid)).get(intruder.id) == "forged"
            assert await alice.ok("get", sid, collection, entity) == {"status": value}
            await logged(process, "author.refused-by-peer", author=intruder.id, reason="forged")


@pytest.mark.parametrize("kind", THROUGH)
async def test_a_delegation_beyond_the_delegators_rights_is_refused(tmp_path: Path, kind: str) -> None:
    alice, dave, erin = (Device(tmp_path / n) for n in ("alice", "dave", "erin"))
    dave_id, erin_id = await dave.init(), await erin.init()
    sid = await create(alice, tag("site"), [(tag("equipment"), tag("pump"), "status=ok")])
    # Dave is an admin until tomorrow; the grant he makes for erin never ends.
    await alice.ok("grant", sid, dave_id, "--rights", "admin", "--expires", "1d")
    data = tmp_path / "relay"
    async with through(kind, data) as process:
        await alice.sync(process.url)
        delegator = dave.identity()
        beyond = make_grant(delegator, sid, erin.identity().public_key, Rights.WRITE, (), 0,
                            hlc_at(now_ms()), grant_of(data, sid, delegator).hash)
        env = forge_records(delegator, sid, [beyond], head(data, sid, dave_id))
        push = EnvelopeHost(delegator, env)
        assert (await exchange(push, process.url)).ok
        if kind == "enforcing":
            assert push.reasons() == {"beyond-delegation"}
            pull = EnvelopeHost(erin.identity(), spaces=[sid])
            assert (await exchange(pull, process.url)).ok
            assert pull.got(sid) == []  # erin was let in by nothing
        else:
            await alice.sync(process.url)
            assert (await quarantined(alice, sid)).get(dave_id) == "beyond-delegation"
            assert erin_id not in {m["device"] for m in (await alice.ok("members", sid))["members"]}


@pytest.mark.parametrize("kind", THROUGH)
async def test_a_grant_replayed_into_another_space_is_refused(tmp_path: Path, kind: str) -> None:
    alice, mallory = Device(tmp_path / "alice"), Device(tmp_path / "mallory")
    mallory_id = await mallory.init()
    site_a = await create(alice, tag("site"), [(tag("equipment"), tag("pump"), "status=ok")])
    site_b = await create(alice, tag("site"), [(tag("equipment"), tag("pump"), "status=ok")])
    await alice.ok("grant", site_a, mallory_id, "--rights", "write")
    data = tmp_path / "relay"
    async with through(kind, data) as process:
        await alice.sync(process.url)
        member = mallory.identity()
        replay = forge_records(member, site_b, [grant_of(data, site_a, member)], (0, b""))
        push = EnvelopeHost(member, replay)
        assert (await exchange(push, process.url)).ok
        if kind == "enforcing":
            assert push.reasons() == {"misplaced-record"}
            assert member.id not in authors(data, site_b)
            reads = EnvelopeHost(member, spaces=[site_a, site_b])
            assert (await exchange(reads, process.url)).ok
            assert reads.got(site_a) and not reads.got(site_b)  # its grant is good in A only
        else:
            await alice.sync(process.url)
            assert (await quarantined(alice, site_b)).get(mallory_id) == "misplaced-record"
            assert mallory_id not in {m["device"] for m in (await alice.ok("members", site_b))["members"]}
