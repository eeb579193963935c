"""Spaces bound to keys on a device (issue 12): ids from a genesis, local names, store
format 3 and the migration of older directories, and membership envelopes judged on receive.
Real replicas on real data directories throughout."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from crdt_sync import AmbiguousSpace, NotFound, Rejected, Replica, StoreVersionError
from crdt_sync.envelope import seal
from crdt_sync.identity import Identity
from crdt_sync.members import MEMBERSHIP_SKIPS
from crdt_sync.membership import (
    Carrier,
    MembershipLog,
    Rights,
    decode_membership,
    encode_membership,
    is_membership,
    is_space_id,
    make_genesis,
    make_grant,
    space_id_of,
)
from crdt_sync.migrate import migrate
from crdt_sync.spaces import LABEL_ENTITY
from tests.conftest import ReplicaFactory
from tests.helpers import CREATED, SHARED, exchange, share

HLC = 1 << 40


# -- ids and names ------------------------------------------------------------------------------
def test_a_new_space_has_an_id_bound_to_its_creator(replica: Replica) -> None:
    sp = replica.create_space("site-42")
    assert is_space_id(sp.id) and sp.name == "site-42"
    assert replica.space("site-42").id == replica.space(sp.id).id == replica.space_id("site-42") == sp.id
    assert replica.spaces() == [sp.id]
    assert replica.version_vector(sp.id) == {replica.device_id: CREATED}  # [genesis, keys], label
    [info] = replica.space_infos()
    assert (info.id, info.name, info.rights, info.members) == (sp.id, "site-42", "admin", 1)
    [member] = replica.members(sp.id)
    assert (member.device, member.rights, member.via) == (replica.device_id, Rights.ADMIN, "genesis")
    assert sp.list() == [] and sp.conflicts() == []  # the label is not the application's data
    assert replica.secrets.keyring().secret(sp.id) is not None


def test_an_unknown_name_creates_a_space_and_a_known_one_finds_it(replica: Replica) -> None:
    first = replica.space("site-42")
    first.put("eq", "pump", {"ok": True})
    assert replica.space("site-42").get("eq", "pump") == {"ok": True}
    assert replica.spaces() == [first.id]
    with pytest.raises(NotFound):
        replica.space_id("nowhere")


def test_two_spaces_of_one_name_are_different_and_the_name_is_ambiguous(replica: Replica) -> None:
    a = replica.create_space("depot")
    b = replica.create_space("depot")
    assert a.id != b.id
    with pytest.raises(AmbiguousSpace) as info:
        replica.space("depot")
    assert info.value.ids == sorted([a.id, b.id]) and "use the id" in str(info.value)
    assert isinstance(info.value, LookupError)
    replica.space(a.id).put("eq", "x", {"in": "a"})
    assert replica.space(b.id).list() == []
    replica.rename_space(b.id, "depot-2")
    assert replica.space("depot").id == a.id and replica.space("depot-2").id == b.id


def test_members_learn_the_name_from_the_label_and_keep_their_own(open_replica: ReplicaFactory) -> None:
    a, b, c = open_replica("a"), open_replica("b"), open_replica("c")
    space = share(a, b, c, name="site-42", rights="write")
    assert a.version_vector(space) == {a.device_id: SHARED}
    for other in (b, c):
        assert other.space_id("site-42") == space
        [info] = other.space_infos()
        assert (info.name, info.rights, info.members) == ("site-42", "write", 3)
    b.rename_space(space, "my site")  # a local name, and a new label (b may write)
    assert b.space("my site").id == space
    exchange(b, c, space)
    assert c.space_id("site-42") == space  # c keeps the name it has
    b.space(space).put("eq", "pump", {"by": "b"})
    exchange(b, a, space)
    assert a.space("site-42").get("eq", "pump") == {"by": "b"}


# -- membership envelopes on receive ------------------------------------------------------------
def test_a_forged_grant_quarantines_its_author(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    space = share(admin, device)
    stranger = Identity.generate()
    genesis = _log(admin, space).genesis()
    assert genesis is not None
    # The stranger quotes the genesis as its authority: it is the creator's, not a grant to it.
    grant = make_grant(stranger, space, stranger.public_key, Rights.ADMIN, [], 0, HLC, genesis.hash)
    env = seal(stranger, space, 1, b"", HLC, encode_membership([grant]))
    got = device.accept([env.wire], "peer x", space)
    assert got.applied == 0
    [record] = device.quarantined(space)
    assert (record.author, record.from_seq, record.reason) == (stranger.id, 1, "forged")
    assert [m.device for m in device.members(space)] == sorted([admin.device_id, device.device_id])


def test_a_grant_by_a_non_admin_is_refused_with_a_reason(open_replica: ReplicaFactory) -> None:
    admin, writer, device = open_replica("admin"), open_replica("writer"), open_replica("device")
    space = share(admin, writer, device, rights="write")
    stranger = Identity.generate()
    with pytest.raises(Rejected) as refused:
        writer.grant(space, stranger.id, "read")  # refused before anything is published
    assert refused.value.reason == "not-admin"
    assert writer.version_vector(space) == {admin.device_id: SHARED}
    # Signed by hand, as a writer gone rogue would: every device refuses it, with a reason.
    authority = writer.members(space)
    proof = next(m for m in authority if m.device == writer.device_id)
    assert proof.rights == Rights.WRITE
    log_proof = _authority(writer, space)
    grant = make_grant(writer.identity, space, stranger.public_key, Rights.READ, [], 0, HLC, log_proof)
    env = seal(writer.identity, space, 1, b"", HLC, encode_membership([grant]))
    got = device.accept([env.wire], "peer x", space)
    assert got.applied == 0
    [record] = device.quarantined(space)
    assert (record.author, record.from_seq, record.reason) == (writer.device_id, 1, "not-admin")


def _log(replica: Replica, space: str) -> MembershipLog:
    """The space's log as another device would build it from ``replica``'s envelopes."""
    log = MembershipLog(space)
    for env in replica.sync_host.missing_envelopes(space, {}, 1000, 1 << 24):
        if is_membership(env.payload):
            log.add(decode_membership(env.payload), Carrier(env.author_key, env.seq, env.hlc))
    return log


def _authority(replica: Replica, space: str) -> bytes:
    proof = _log(replica, space).authority(replica.identity.public_key)
    assert proof is not None
    return proof


def test_a_grant_replayed_into_another_space_is_refused(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    one = share(admin, device, name="one")
    two = share(admin, device, name="two")
    grant = make_grant(admin.identity, one, Identity.generate().public_key, Rights.WRITE, [], 0, HLC,
                       _authority(admin, one))
    head = admin.sync_host.missing_envelopes(two, {}, 100, 1 << 20)[-1]
    env = seal(admin.identity, two, head.seq + 1, head.hash, HLC << 1, encode_membership([grant]))
    got = device.accept([env.wire], "peer x", two)
    assert got.applied == 0
    [record] = device.quarantined(two)
    assert (record.author, record.reason) == (admin.device_id, "wrong-space")


def test_a_grant_whose_proof_is_unknown_is_skipped_like_a_gap(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    space = share(admin, device)
    stranger = Identity.generate()
    grant = make_grant(stranger, space, stranger.public_key, Rights.WRITE, [], 0, HLC, os.urandom(32))
    env = seal(stranger, space, 1, b"", HLC, encode_membership([grant]))
    got = device.accept([env.wire], "peer x", space)
    assert (got.applied, got.gaps) == (0, 1)
    assert device.quarantined(space) == []  # it may count once its proof arrives
    assert "unknown-proof" in MEMBERSHIP_SKIPS


def test_a_genesis_of_another_space_is_refused(open_replica: ReplicaFactory) -> None:
    device = open_replica("device")
    stranger = Identity.generate()
    genesis = make_genesis(stranger, HLC)
    other = "s" + "d" * 32
    device.keep(other)
    env = seal(stranger, other, 1, b"", HLC, encode_membership([genesis]))
    assert space_id_of(genesis) != other
    got = device.accept([env.wire], "peer x", other)
    assert got.applied == 0
    [record] = device.quarantined(other)
    assert record.reason == "wrong-space"


# -- store format 3 and the migration -----------------------------------------------------------
def _old_directory(path: Path) -> None:
    """A directory as a build before issue 12 left it: spaces are plain names, format 2."""
    with Replica(path) as old:
        sp = old.space("site-42")
        sp.put("eq", "pump", {"status": "ok", "n": 3})
        with sp.transaction() as tx:
            tx.entity("eq", "pump").text("notes").append("replaced the seal")
            tx.entity("eq", "valve").list("parts").extend(["o-ring", 2])
        sp.put("eq", "gone", {"x": 1})
        sp.delete("eq", "gone")
        sid = sp.id
    db = sqlite3.connect(path / "store.sqlite3")
    for table in ("envelopes", "heads", "parts", "entities", "fields", "conflicts", "spaces"):
        db.execute(f"UPDATE {table} SET space='site-42' WHERE space=?", (sid,))
    db.execute(f"DELETE FROM entities WHERE collection='{LABEL_ENTITY[0]}'")
    db.execute("DROP TABLE space_names")
    db.execute("DROP TABLE membership")
    db.execute("UPDATE meta SET value=2 WHERE key='format'")
    db.commit()
    db.close()


def test_an_old_directory_is_refused_with_the_command_that_migrates_it(tmp_path: Path) -> None:
    _old_directory(tmp_path / "old")
    with pytest.raises(StoreVersionError, match=f"crdt-sync migrate {tmp_path / 'old'}"):
        Replica(tmp_path / "old")
    with pytest.raises(StoreVersionError, match="crdt-sync migrate"):
        Replica(tmp_path / "old", read_only=True)


def test_migrate_moves_each_space_into_a_new_one_of_the_same_name(tmp_path: Path) -> None:
    path = tmp_path / "old"
    _old_directory(path)
    report = migrate(path)
    assert report.migrated and list(report.spaces) == ["site-42"] and report.entities == 2
    assert report.backup is not None and Path(report.backup).exists()
    with Replica(path) as replica:
        sp = replica.space("site-42")
        assert sp.id == report.spaces["site-42"]
        assert sp.get("eq", "pump") == {"status": "ok", "n": 3, "notes": "replaced the seal"}
        assert sp.get("eq", "valve") == {"parts": ["o-ring", 2]}
        assert not sp.exists("eq", "gone")
        [info] = replica.space_infos()
        assert info.rights == "admin"
    assert not migrate(path).migrated  # nothing left to do


# -- encrypted payloads -------------------------------------------------------------------------
def test_every_data_envelope_is_encrypted_and_opens_only_with_the_key(open_replica: ReplicaFactory) -> None:
    from crdt_sync.space_crypto import DATA_PAYLOAD, decrypt_payload, payload_kind

    admin = open_replica("admin")
    sp = admin.space("site-42")
    sp.put("faults", "f-1", {"note": "diagnosis text 7c1e"})
    envs = admin.sync_host.missing_envelopes(sp.id, {}, 100, 1 << 24)
    kinds = [payload_kind(e.payload) for e in envs]
    assert kinds == [4, DATA_PAYLOAD, DATA_PAYLOAD]  # [genesis, keys], the label, the fault
    last = envs[-1]
    assert b"diagnosis" not in last.wire and b"faults" not in last.wire and b"site-42" not in envs[1].wire
    ring = admin.secrets.keyring()
    body = decrypt_payload(ring.keys_of(sp.id), sp.id, last.author_key, last.seq, last.payload)
    assert b"diagnosis text 7c1e" in body
    with pytest.raises(Rejected) as refused:
        decrypt_payload(lambda _epoch: None, sp.id, last.author_key, last.seq, last.payload)
    assert refused.value.reason == "no-key"
    with pytest.raises(Rejected) as refused:
        decrypt_payload(lambda _epoch: bytes(32), sp.id, last.author_key, last.seq, last.payload)
    assert refused.value.reason == "undecryptable"


def test_a_device_without_the_key_may_not_write(open_replica: ReplicaFactory) -> None:
    device = open_replica("device")
    stranger_space = "s" + "e" * 32
    with pytest.raises(Rejected) as refused:
        device.space(stranger_space).put("eq", "x", {"v": 1})
    assert refused.value.reason == "not-a-member"
    assert device.unsealed() == 0


def test_a_plaintext_payload_is_refused(open_replica: ReplicaFactory) -> None:
    from crdt_sync.payload import encode_payload, pack_item

    admin, device = open_replica("admin"), open_replica("device")
    space = share(admin, device)
    stranger = Identity.generate()
    plain = encode_payload([("eq", "pump", pack_item(HLC, b"\x00\x00"))])
    env = seal(stranger, space, 1, b"", HLC, plain)
    assert device.accept([env.wire], "peer x", space).applied == 0
    [record] = device.quarantined(space)
    assert (record.author, record.reason) == (stranger.id, "plaintext")


def test_a_tampered_payload_is_undecryptable(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    space = share(admin, device, rights="write")
    device.space(space).put("eq", "pump", {"ok": True})
    [env] = device.sync_host.missing_envelopes(space, admin.version_vector(space), 10, 1 << 20)
    moved = seal(device.identity, space, env.seq, env.prev_hash, env.hlc,
                 env.payload[:-1] + bytes([env.payload[-1] ^ 1]))
    got = admin.accept([moved.wire], "peer x", space)
    assert got.applied == 0
    [record] = admin.quarantined(space)
    assert (record.author, record.reason) == (device.device_id, "undecryptable")


def test_envelopes_that_arrive_before_their_keys_are_held_then_applied(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    sp = admin.space("site-42")
    sp.put("eq", "pump", {"status": "ok"})
    admin.grant(sp.id, device.device_id, "write")
    envs = [e.wire for e in admin.sync_host.missing_envelopes(sp.id, {}, 100, 1 << 24)]
    genesis, label, pump, grant = envs
    device.keep(sp.id)
    got = device.receive([genesis, label, pump], "peer x", sp.id)
    assert got.applied == 3  # stored: the chain goes on
    assert not device.space(sp.id).exists("eq", "pump")  # ... but held: no key for its epoch yet
    with pytest.raises(NotFound):
        device.space_id("site-42")
    device.receive([grant], "peer x", sp.id)  # the keys record sealed to this device
    assert device.space(sp.id).get("eq", "pump") == {"status": "ok"}
    assert device.space_id("site-42") == sp.id  # the label was held too


# -- data envelopes judged by the membership log ------------------------------------------------
def _forged(identity: Identity, member: Replica, space: str, seq: int, prev: bytes, collection: str) -> bytes:
    """An envelope of ``identity`` encrypted with the key ``member`` holds (a leaked key, or a
    member that skips its own device's checks), writing ``collection``."""
    from crdt_sync.payload import encode_payload, pack_item
    from crdt_sync.space_crypto import encrypt_payload

    ring = member.secrets.keyring()
    _n, epoch_id = ring.epochs(space)[-1]
    key = ring.key(space, epoch_id)
    assert key is not None
    hlc = (member.sync_host.wall_ms() << 16) | 1
    body = encode_payload([(collection, "forged", pack_item(hlc, b"\x00\x00"))])
    payload = encrypt_payload(key, epoch_id, space, identity.public_key, seq, body)
    return seal(identity, space, seq, prev, hlc, payload).wire


def test_a_read_only_member_may_not_write_and_its_writes_are_refused(open_replica: ReplicaFactory) -> None:
    admin, reader = open_replica("admin"), open_replica("reader")
    space = share(admin, reader, rights="read")
    assert reader.space(space).list() == []  # it reads
    with pytest.raises(Rejected) as refused:
        reader.space(space).put("eq", "pump", {"by": "reader"})
    assert refused.value.reason == "read-only"
    assert reader.unsealed() == 0  # nothing was journaled
    got = admin.accept([_forged(reader.identity, reader, space, 1, b"", "eq")], "peer x", space)
    assert (got.applied, got.skipped) == (0, 1)  # set aside; a grant on its way would lift it
    [record] = admin.quarantined(space)
    assert (record.author, record.reason) == (reader.device_id, "read-only")
    assert not admin.space(space).exists("eq", "forged")


def test_a_write_outside_the_granted_collections_is_refused(open_replica: ReplicaFactory) -> None:
    admin, tech = open_replica("admin"), open_replica("tech")
    space = share(admin, tech, rights="write", collections=["notes"])
    tech.space(space).put("notes", "n-1", {"text": "checked"})
    with pytest.raises(Rejected) as refused:
        tech.space(space).put("equipment", "pump", {"status": "ok"})
    assert refused.value.reason == "out-of-scope"
    exchange(tech, admin, space)
    assert admin.space(space).get("notes", "n-1") == {"text": "checked"}
    seq = tech.version_vector(space)[tech.device_id]
    prev = tech.sync_host.envelope_hash(space, tech.device_id, seq)
    assert prev is not None
    got = admin.accept([_forged(tech.identity, tech, space, seq + 1, prev, "equipment")], "peer x", space)
    assert (got.applied, got.skipped) == (0, 1)
    assert [(q.author, q.reason) for q in got.quarantined] == [(tech.device_id, "out-of-scope")]
    assert not admin.space(space).exists("equipment", "forged")


def test_a_stranger_holding_a_leaked_key_is_not_a_member(open_replica: ReplicaFactory) -> None:
    admin, device = open_replica("admin"), open_replica("device")
    space = share(admin, device, rights="write")
    stranger = Identity.generate()
    got = device.accept([_forged(stranger, device, space, 1, b"", "eq")], "peer x", space)
    assert (got.applied, got.skipped) == (0, 1)
    assert [(q.author, q.reason) for q in got.quarantined] == [(stranger.id, "not-a-member")]
    assert stranger.id not in device.version_vector(space)


def test_an_expired_grant_stops_local_writes(open_replica: ReplicaFactory) -> None:
    from tests.helpers import ManualClock

    clock = ManualClock()
    admin, temp = open_replica("admin", wall=clock), open_replica("temp", wall=clock)
    space = admin.space("site-42").id
    admin.grant(space, temp.device_id, "write", expires_ms=60_000)
    temp.import_bundle(admin.export_bundle(space))
    temp.space(space).put("eq", "pump", {"ok": True})
    clock.advance(61_000)
    with pytest.raises(Rejected) as refused:
        temp.space(space).put("eq", "valve", {"ok": True})
    assert refused.value.reason == "expired"


# -- revocation ---------------------------------------------------------------------------------
def test_a_revoked_device_is_refused_and_cannot_read_what_follows(open_replica: ReplicaFactory) -> None:
    admin, bob, carol = open_replica("admin"), open_replica("bob"), open_replica("carol")
    space = share(admin, bob, carol, rights="write")
    bob.space(space).put("eq", "before", {"by": "bob"})
    exchange(bob, admin, space)  # the admin holds bob's seq 1: it stays valid
    admin.revoke(space, bob.device_id)
    exchange(admin, carol, space)
    [revoked] = [m for m in admin.members(space) if m.device == bob.device_id]
    assert revoked.revoked_after == 1
    assert [n for n, _ in carol.secrets.keyring().epochs(space)] == [0, 1]  # rotated, for carol
    # Offline, bob has not heard yet: his next write is his own device's, and nobody takes it.
    bob.space(space).put("eq", "after", {"by": "bob"})
    for other in (admin, carol):
        exchange(bob, other, space)
        assert other.space(space).get("eq", "before") == {"by": "bob"}
        assert not other.space(space).exists("eq", "after")
        assert bob.device_id not in other.version_vector(space) or \
            other.version_vector(space)[bob.device_id] == 1
    # What the others write from now on is sealed under the new epoch: bob cannot read it.
    admin.space(space).put("eq", "plan", {"secret": True})
    exchange(admin, carol, space)
    assert carol.space(space).get("eq", "plan") == {"secret": True}
    exchange(admin, bob, space)
    assert not bob.space(space).exists("eq", "plan")
    assert [n for n, _ in bob.secrets.keyring().epochs(space)] == [0]
    # And now that bob's device knows, it refuses to write.
    with pytest.raises(Rejected) as refused:
        bob.space(space).put("eq", "again", {"by": "bob"})
    assert refused.value.reason == "revoked"


def test_only_an_admin_may_revoke(open_replica: ReplicaFactory) -> None:
    admin, writer = open_replica("admin"), open_replica("writer")
    space = share(admin, writer, rights="write")
    with pytest.raises(Rejected) as refused:
        writer.revoke(space, admin.device_id)
    assert refused.value.reason == "not-admin"
    assert writer.version_vector(space) == {admin.device_id: SHARED}
