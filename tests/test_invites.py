"""Invites (issue 12): ``Replica.invite`` prints a single-use token, ``Replica.join`` redeems
it with no admin online; the joiner then syncs by bundle or session like any member. Real
replicas on real data directories throughout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdt_sync import Rejected
from crdt_sync.bundle import decode_bundle
from crdt_sync.envelope import open_envelope
from crdt_sync.membership import Rights, decode_token
from crdt_sync.transports.memory import MemoryNetwork
from tests.conftest import ReplicaFactory
from tests.e2e_helpers import forge_data, made_body
from tests.helpers import exchange
from tests.sync_helpers import FAST, sync_over

DAY_MS = 24 * 3600 * 1000


def test_a_joiner_enrolls_from_the_token_alone_and_syncs_by_bundle(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    site.put("eq", "pump", {"by": "alice"})
    token = alice.invite(site.id)
    assert decode_token(token).space == site.id
    joined = bob.join(token)  # nothing from alice but the token
    assert (joined.id, joined.name) == (site.id, "site-42")
    assert bob.spaces() == [site.id]
    [info] = bob.space_infos()
    assert info.rights == "write"
    joined.put("eq", "valve", {"by": "bob"})  # a member already: it may write offline
    exchange(alice, bob, site.id)
    assert bob.space(site.id).get("eq", "pump") == {"by": "alice"}
    exchange(bob, alice, site.id)
    assert alice.space(site.id).get("eq", "valve") == {"by": "bob"}
    [member] = [m for m in alice.members(site.id) if m.device == bob.device_id]
    assert (member.rights, member.via, member.granted_by) == (Rights.WRITE, "invite", alice.device_id)
    assert not member.reused_invite


def test_a_joiner_syncs_over_a_session(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    site.put("eq", "pump", {"by": "alice"})
    bob.join(alice.invite(site.id)).put("eq", "valve", {"by": "bob"})
    alice.seal()
    bob.seal()
    a, b = MemoryNetwork(seed=3).pair()
    out_a, out_b = asyncio.run(sync_over(alice, bob, a, b, config=FAST))
    assert out_a.synced and out_b.synced, (out_a.closed, out_b.closed)
    assert alice.space(site.id).get("eq", "valve") == {"by": "bob"}
    assert bob.space(site.id).get("eq", "pump") == {"by": "alice"}


def test_a_read_only_invite_gives_read_rights(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    site.put("eq", "pump", {"by": "alice"})
    joined = bob.join(alice.invite(site.id, rights="read"))
    exchange(alice, bob, site.id)
    assert joined.get("eq", "pump") == {"by": "alice"}
    with pytest.raises(Rejected) as refused:
        joined.put("eq", "valve", {"by": "bob"})
    assert refused.value.reason == "read-only"


def test_a_collection_scoped_invite(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    joined = bob.join(alice.invite(site.id, collections=["notes"]))
    joined.put("notes", "n1", {"text": "ok"})
    with pytest.raises(Rejected) as refused:
        joined.put("eq", "pump", {"by": "bob"})
    assert refused.value.reason == "out-of-scope"
    exchange(bob, alice, site.id)
    assert alice.space(site.id).get("notes", "n1") == {"text": "ok"}


def test_an_expired_token_is_refused_with_a_clear_error(open_replica: ReplicaFactory) -> None:
    alice = open_replica("alice")
    site = alice.create_space("site-42")
    token = alice.invite(site.id, expires_ms=DAY_MS)
    later = open_replica("bob", wall=lambda: alice._clock.wall() + 2 * DAY_MS)
    with pytest.raises(Rejected) as refused:
        later.join(token)
    assert refused.value.reason == "expired-token"
    assert "ask an admin" in refused.value.detail
    assert later.spaces() == []
    with pytest.raises(Rejected) as bad:
        later.join(token[:-8])
    assert bad.value.reason == "bad-token"


def test_without_history_the_joiner_cannot_read_older_epochs(open_replica: ReplicaFactory) -> None:
    alice, carol, bob = open_replica("alice"), open_replica("carol"), open_replica("bob")
    site = alice.create_space("site-42")
    site.put("eq", "old", {"secret": True})
    alice.grant(site.id, carol.device_id, "write")
    alice.revoke(site.id, carol.device_id)  # a rotation: epoch 1
    site.put("eq", "new", {"by": "alice"})
    joined = bob.join(alice.invite(site.id, history=False))
    assert [n for n, _ in bob.secrets.keyring().epochs(site.id)] == [1]
    exchange(alice, bob, site.id)
    assert joined.get("eq", "new") == {"by": "alice"}
    assert not joined.exists("eq", "old")
    # with history, the next joiner reads both
    dave = open_replica("dave")
    dave.join(alice.invite(site.id))
    exchange(alice, dave, site.id)
    assert dave.space(site.id).get("eq", "old") == {"secret": True}


def test_a_token_redeemed_twice_voids_both_and_admins_see_it(open_replica: ReplicaFactory) -> None:
    alice, bob, mallory = open_replica("alice"), open_replica("bob"), open_replica("mallory")
    site = alice.create_space("site-42")
    token = alice.invite(site.id)
    bob.join(token)
    mallory.join(token)
    bob.space(site.id).put("eq", "b", {"by": "bob"})
    mallory.space(site.id).put("eq", "m", {"by": "mallory"})
    exchange(bob, alice, site.id)
    # mallory's whole chain of the space, with the invite key's seq 1 that is not bob's: a fork
    assert alice.import_bundle(mallory.export_bundle(site.id)).forks == 1
    joiners = {m.device: m for m in alice.members(site.id) if m.device != alice.device_id}
    assert set(joiners) == {bob.device_id, mallory.device_id}
    assert all(m.reused_invite for m in joiners.values())
    assert not alice.space(site.id).exists("eq", "m")
    [info] = alice.space_infos()
    assert info.members == 1  # neither counts


def test_joining_again_with_the_same_token_changes_nothing(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    token = alice.invite(site.id)
    bob.join(token)
    before = bob.version_vector(site.id)
    assert bob.join(token).id == site.id
    assert bob.version_vector(site.id) == before


def test_only_an_admin_may_invite(open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice"), open_replica("bob")
    site = alice.create_space("site-42")
    bob.join(alice.invite(site.id, rights="write"))
    with pytest.raises(Rejected) as refused:
        bob.invite(site.id)
    assert refused.value.reason == "not-admin"


def test_a_joined_replica_reopens_as_a_member(open_replica: ReplicaFactory) -> None:
    alice = open_replica("alice")
    site = alice.create_space("site-42")
    bob = open_replica("bob")
    bob.join(alice.invite(site.id))
    bob.close()
    again = open_replica("bob")
    again.space(site.id).put("eq", "valve", {"by": "bob"})
    exchange(again, alice, site.id)
    assert alice.space(site.id).get("eq", "valve") == {"by": "bob"}




def test_a_joiner_that_restarted_opens_a_key_sealed_to_its_invite(open_replica: ReplicaFactory) -> None:
    """The admin rotates (it revokes someone) before the redemption reaches it: the new epoch
    is sealed to the invite key, which only the joiner's key file holds after a restart."""
    alice, carol = open_replica("alice"), open_replica("carol")
    site = alice.create_space("site-42")
    alice.grant(site.id, carol.device_id, "write")
    bob = open_replica("bob")
    bob.join(alice.invite(site.id))
    bob.close()
    alice.revoke(site.id, carol.device_id)  # alice has not seen bob's redemption
    alice.space(site.id).put("eq", "pump", {"after": "the rotation"})
    again = open_replica("bob")
    exchange(alice, again, site.id)
    assert again.space(site.id).get("eq", "pump") == {"after": "the rotation"}


def test_a_write_that_arrives_before_its_grant_is_set_aside_then_applied(
        open_replica: ReplicaFactory) -> None:
    """A member's data envelope that reaches a device before the record admitting its author
    is refused as not-a-member (the author quarantined, a session told so), and applied when
    the record arrives: the refusal is looked at again, and the quarantine lifted."""
    alice, bob, carol = open_replica("alice"), open_replica("bob"), open_replica("carol")
    site = alice.create_space("site-42")
    carol.join(alice.invite(site.id))
    exchange(carol, alice, site.id)
    bob.join(alice.invite(site.id))
    exchange(alice, bob, site.id)
    bob.space(site.id).put("eq", "valve", {"by": "bob"})
    exchange(alice, carol, site.id)
    envelopes = [open_envelope(w) for w in decode_bundle(bob.export_bundle(site.id)).envelopes]
    held = carol.version_vector(site.id)
    new = [e for e in envelopes if e.seq > held.get(e.author, 0)]
    data = [e.wire for e in new if e.author == bob.device_id]
    rest = [e.wire for e in new if e.author != bob.device_id]
    assert data and rest
    first = carol.accept(data, "test", site.id)
    assert [(q.author, q.reason) for q in first.quarantined] == [(bob.device_id, "not-a-member")]
    assert not carol.space(site.id).exists("eq", "valve")
    carol.accept(rest, "test", site.id)  # the invite, the redemption: bob is a member
    assert carol.space(site.id).get("eq", "valve") == {"by": "bob"}
    assert carol.quarantined(site.id) == []


def test_a_bundle_with_a_strangers_envelopes_imports_the_rest(open_replica: ReplicaFactory,
                                                               tmp_path: Path) -> None:
    """One author with no rights never refuses a bundle: its envelopes are set aside with the
    reason, the others are applied."""
    alice, bob, mallory = open_replica("alice"), open_replica("bob"), open_replica("mallory")
    site = alice.create_space("site-42")
    bob.join(alice.invite(site.id))
    mallory.join(alice.invite(site.id, rights="read"))
    exchange(alice, mallory, site.id)
    exchange(mallory, alice, site.id)  # the redemption: alice knows mallory reads
    exchange(alice, bob, site.id)
    mallory.accept(decode_bundle(bob.export_bundle(site.id)).envelopes, "test", site.id)
    body = made_body(tmp_path / "scratch", "eq", "pump", {"by": "mallory"})
    head = mallory.version_vector(site.id).get(mallory.device_id, 0)
    assert head == 0  # a reader that never wrote
    forged = forge_data(mallory.identity, site.id, body, mallory.secrets.keyring(), (0, b"")).wire
    bob.space(site.id).put("eq", "valve", {"by": "bob"})
    carried = [*decode_bundle(bob.export_bundle(site.id)).envelopes, forged]
    result = alice.receive(carried, "bundle", site.id)
    assert result.applied >= 1
    assert alice.space(site.id).get("eq", "valve") == {"by": "bob"}
    assert not alice.space(site.id).exists("eq", "pump")
    [record] = alice.quarantined(site.id)
    assert (record.author, record.reason) == (mallory.device_id, "read-only")
