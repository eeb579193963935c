"""Signed snapshots, stage 1 (docs/PROTOCOL.md, "Snapshots"): a new device imports a snapshot
plus the tail instead of a space's whole history, and verifies both. Each attack of the
section is reproduced here: refused with its reason, recorded, the rest of the bundle taken
where it chains on."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest

from crdt_sync import Rejected, Replica
from crdt_sync import snapshot as sn
from crdt_sync.bundle import BUNDLE_VERSION, decode_bundle, encode_bundle
from crdt_sync.envelope import open_envelope, seal
from crdt_sync.identity import public_key_of
from tests import snapshot_vectors as sv
from tests.conftest import ReplicaFactory
from tests.helpers import share, space_state

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<what>.+) \| `(?P<hex>[0-9a-f]+)` \|$")


# -- helpers --------------------------------------------------------------------------------------
def edit(replica: Replica, space: str, entity: str, n: int) -> None:
    replica.space(space).put("equipment", entity, {"n": n, "by": replica.device_id[:6]})
    replica.seal()


def catch_up(src: Replica, dst: Replica, space: str) -> None:
    dst.import_bundle(src.export_bundle(space, since=dst.version_vector(space)))


def reasons(replica: Replica) -> list[str]:
    return [r.reason for r in replica.rejections()]


def contents(replica: Replica, space: str) -> dict[str, object]:
    state = space_state(replica, space)
    state.pop("vv")
    return state


def rebundle(admin: Replica, data: bytes, snapshot: bytes | None = None,
             envelopes: list[bytes] | None = None) -> bytes:
    """``data`` with its snapshot or envelopes replaced, signed again by ``admin`` (the
    exporter: a bundle's own signature is not what is attacked here)."""
    b = decode_bundle(data)
    return encode_bundle(admin.identity, b.space, b.version_vector, b.since,
                         b.envelopes if envelopes is None else envelopes, b.proofs,
                         b.snapshot if snapshot is None else snapshot)


def resigned(author: Replica, snap: sn.Snapshot, **changes: object) -> bytes:
    """``snap`` with fields changed and signed again by ``author`` (valid signature)."""
    s = replace(snap, **changes)  # type: ignore[arg-type]
    signature = author.identity.sign(sn.signed_bytes(s.space, s.author_key, s.hlc, s.covered, s.epoch_id,
                                                     s.nonce, s.ciphertext))
    return cbor2.dumps([sn.SNAPSHOT_FORMAT, s.space, s.author_key, s.hlc, [list(c) for c in s.covered],
                        s.epoch_id, s.nonce, s.ciphertext, signature], canonical=True)


def forged(author: Replica, space: str, heads: dict[str, tuple[int, bytes]],
           entities: list[tuple[str, str, bytes]]) -> bytes:
    """A snapshot made by ``author`` with its own epoch key (any member holds one), covering
    ``heads`` (``{device id: (seq, head hash)}``)."""
    keyring = author.secrets.keyring()
    _n, epoch_id = keyring.epochs(space)[-1]
    key = keyring.key(space, epoch_id)
    assert key is not None
    covered = [(public_key_of(a), s, h) for a, (s, h) in heads.items()]
    return sn.make_snapshot(author.identity, space, 1 << 50, covered, key, epoch_id, entities).wire


class World:
    """An admin and a writer with many edits, a snapshot in the middle, more edits after it."""

    def __init__(self, open_replica: ReplicaFactory) -> None:
        self.admin = open_replica("admin", seal_interval=0)
        self.writer = open_replica("writer", seal_interval=0)
        self.witness = open_replica("witness", seal_interval=0)  # holds everything up to the snapshot
        self.space = share(self.admin, self.writer, self.witness, name="site", rights="write")
        for i in range(12):
            edit(self.admin, self.space, "pump", i)
            edit(self.writer, self.space, "valve", i)
            catch_up(self.writer, self.admin, self.space)
        catch_up(self.admin, self.writer, self.space)
        catch_up(self.admin, self.witness, self.space)
        self.snap = sn.decode_snapshot(self.admin.snapshot(self.space))
        for i in range(3):  # the tail
            edit(self.admin, self.space, "pump", 100 + i)
            edit(self.writer, self.space, "valve", 100 + i)
            catch_up(self.writer, self.admin, self.space)

    def fresh(self, open_replica: ReplicaFactory, name: str = "fresh") -> Replica:
        device = open_replica(name, seal_interval=0)
        self.admin.grant(self.space, device.device_id, "write")
        return device

    def bundle(self) -> bytes:
        return self.admin.export_bundle(self.space, snapshot=True)


@pytest.fixture
def world(open_replica: ReplicaFactory) -> World:
    return World(open_replica)


# -- it works -------------------------------------------------------------------------------------
def test_a_new_device_gets_the_same_space_from_a_snapshot_and_the_tail(
        world: World, open_replica: ReplicaFactory) -> None:
    fresh = world.fresh(open_replica)
    full = world.fresh(open_replica, "full")
    data = world.bundle()
    bundle = decode_bundle(data)
    assert bundle.snapshot == world.snap.wire and bundle.since == {}
    result = fresh.import_bundle(data)
    assert result.snapshot == "applied"
    full.import_bundle(world.admin.export_bundle(world.space))
    assert contents(fresh, world.space) == contents(full, world.space) == contents(world.admin, world.space)
    assert fresh.version_vector(world.space) == full.version_vector(world.space) \
        == world.admin.version_vector(world.space)
    assert fresh.rejections() == []
    # the envelopes below the chain bases, arriving later, are duplicates: nothing is applied again
    again = fresh.import_bundle(world.admin.export_bundle(world.space))
    assert again.applied == 0 and again.duplicates == len(bundle_envelopes(world.admin, world.space))
    assert contents(fresh, world.space) == contents(full, world.space)
    # and the device goes on: its own write, the tail's next envelopes
    edit(world.admin, world.space, "pump", 999)
    catch_up(world.admin, fresh, world.space)
    edit(fresh, world.space, "gauge", 1)
    catch_up(fresh, world.admin, world.space)
    assert world.admin.space(world.space).get("equipment", "gauge") == {"n": 1, "by": fresh.device_id[:6]}
    assert fresh.space(world.space).get("equipment", "pump")["n"] == 999


def bundle_envelopes(replica: Replica, space: str) -> list[bytes]:
    return decode_bundle(replica.export_bundle(space)).envelopes


def test_a_device_that_started_from_a_snapshot_passes_it_on(world: World,
                                                            open_replica: ReplicaFactory) -> None:
    fresh = world.fresh(open_replica)
    fresh.import_bundle(world.bundle())
    third = world.fresh(open_replica, "third")
    catch_up(world.admin, fresh, world.space)  # (the grant of the third)
    data = fresh.export_bundle(world.space)  # it cannot give the history it never had
    assert decode_bundle(data).snapshot == world.snap.wire
    assert third.import_bundle(data).snapshot == "applied"
    assert contents(third, world.space) == contents(world.admin, world.space)
    assert third.version_vector(world.space) == world.admin.version_vector(world.space)


def test_the_bundle_for_a_never_met_device_is_smaller(open_replica: ReplicaFactory) -> None:
    admin = open_replica("admin", seal_interval=0)
    space = share(admin, name="site")
    for i in range(40):  # many edits per entity
        for e in range(5):
            edit(admin, space, f"pump-{e}", i)
    admin.snapshot(space)
    full = admin.export_bundle(space)
    small = admin.export_bundle(space, snapshot=True)
    assert len(small) * 5 < len(full)


def test_only_an_admin_makes_a_snapshot(world: World) -> None:
    with pytest.raises(Rejected) as caught:
        world.writer.snapshot(world.space)
    assert caught.value.reason == "not-admin"


def test_full_history_bundles_are_format_3_and_format_2_is_still_read(world: World,
                                                                       open_replica: ReplicaFactory) -> None:
    reader = world.fresh(open_replica, "reader")
    data = world.admin.export_bundle(world.space)
    assert cbor2.loads(data)[1] == BUNDLE_VERSION == 3 and decode_bundle(data).snapshot is None
    b = decode_bundle(data)
    body = cbor2.dumps([world.admin.identity.public_key, b.space, b.version_vector, b.since, b.envelopes,
                        b.proofs], canonical=True)
    old = cbor2.dumps(["crdt-sync-bundle", 2, body, world.admin.identity.sign(body)], canonical=True)
    reader.import_bundle(old)
    assert contents(reader, world.space) == contents(world.admin, world.space)
    newer = cbor2.dumps(["crdt-sync-bundle", 4, body, world.admin.identity.sign(body)], canonical=True)
    with pytest.raises(Rejected, match="upgrade crdt-sync") as caught:
        reader.import_bundle(newer)
    assert caught.value.reason == "unknown-version"


# -- attacks --------------------------------------------------------------------------------------
def refused_then_tail(world: World, open_replica: ReplicaFactory, snapshot: bytes, reason: str) -> Replica:
    """A device that holds everything up to the snapshot (the witness) refuses ``snapshot`` with
    ``reason``, records it, and still takes the tail (it chains onto what it holds); a fresh
    device refuses it too and takes what it can (the admin's first envelope)."""
    data = rebundle(world.admin, world.bundle(), snapshot=snapshot)
    result = world.witness.import_bundle(data)
    assert result.snapshot == reason
    assert reason in reasons(world.witness)
    assert contents(world.witness, world.space) == contents(world.admin, world.space)
    assert world.witness.version_vector(world.space) == world.admin.version_vector(world.space)
    fresh = world.fresh(open_replica, "fresh-" + reason)
    assert fresh.import_bundle(rebundle(world.admin, world.bundle(), snapshot=snapshot)).snapshot == reason
    assert reason in reasons(fresh)
    assert fresh.version_vector(world.space).get(world.admin.device_id, 0) >= 1  # the genesis applied
    assert fresh.space(world.space).list() == []  # nothing of the refused state
    return fresh


def test_a_snapshot_with_a_bad_signature(world: World, open_replica: ReplicaFactory) -> None:
    bad = bytearray(world.snap.wire)
    bad[-1] ^= 1  # (the signature is last)
    with pytest.raises(Rejected) as caught:
        sn.decode_snapshot(bytes(bad))
    assert caught.value.reason == "snapshot-bad-signature"
    refused_then_tail(world, open_replica, bytes(bad), "snapshot-bad-signature")


def test_a_snapshot_by_a_member_who_is_not_an_admin(world: World, open_replica: ReplicaFactory) -> None:
    by_writer = forged(world.writer, world.space, world.snap.heads,
                       [("equipment", "pump", b"\x00\x00")])
    refused_then_tail(world, open_replica, by_writer, "snapshot-not-admin")


def test_a_tampered_blob_does_not_authenticate(world: World, open_replica: ReplicaFactory) -> None:
    blob = bytearray(world.snap.ciphertext)
    blob[len(blob) // 2] ^= 0x80
    tampered = resigned(world.admin, world.snap, ciphertext=bytes(blob))  # the signature verifies
    refused_then_tail(world, open_replica, tampered, "snapshot-undecryptable")
    # the covered vector is bound to the blob too: another vector under the same blob fails
    moved = resigned(world.admin, world.snap, hlc=world.snap.hlc + 1)
    assert world.witness.import_bundle(rebundle(world.admin, world.bundle(), snapshot=moved)).snapshot \
        == "snapshot-undecryptable"


def test_a_covered_head_that_differs_from_the_receivers_own_chain(world: World,
                                                                   open_replica: ReplicaFactory) -> None:
    heads = dict(world.snap.heads)
    seq, _head = heads[world.writer.device_id]
    heads[world.writer.device_id] = (seq, b"\x66" * 32)
    lying = forged(world.admin, world.space, heads, [("equipment", "pump", b"\x00\x00")])
    data = rebundle(world.admin, world.bundle(), snapshot=lying)
    result = world.witness.import_bundle(data)
    assert result.snapshot == "snapshot-fork"
    assert "snapshot-fork" in reasons(world.witness)
    assert any(world.writer.device_id in r.detail for r in world.witness.rejections())
    # recorded, and the device carries on: the tail chains onto its own chains
    assert contents(world.witness, world.space) == contents(world.admin, world.space)


@pytest.mark.parametrize("field", ["authors", "blob", "entities", "record"])
def test_oversized_fields(world: World, open_replica: ReplicaFactory, monkeypatch: pytest.MonkeyPatch,
                          field: str) -> None:
    if field == "authors":  # more chains than a version vector holds
        covered = {f"a{i}": (1, b"\x01" * 32) for i in range(sn.MAX_AUTHORS + 1)}
        entries = sorted([bytes([i >> 8, i & 0xFF]) + b"\x00" * 30, 1, b"\x01" * 32]
                         for i in range(len(covered)))
        big = resigned(world.admin, world.snap, covered=tuple(tuple(e) for e in entries))
        reason = "snapshot-too-large"
    elif field == "blob":
        monkeypatch.setattr(sn, "MAX_BLOB_BYTES", len(world.snap.ciphertext) - 1)
        big, reason = world.snap.wire, "snapshot-too-large"
    elif field == "entities":
        monkeypatch.setattr(sn, "MAX_ENTITIES", 1)
        big, reason = world.snap.wire, "snapshot-too-large"
    else:
        monkeypatch.setattr(sn, "MAX_SNAPSHOT_BYTES", len(world.snap.wire) - 1)
        big, reason = world.snap.wire, "snapshot-too-large"
    with pytest.raises(Rejected) as caught:
        sn.open_snapshot(sn.decode_snapshot(big), world.admin.secrets.keyring().keys_of(world.space))
    assert caught.value.reason == reason
    refused_then_tail(world, open_replica, big, reason)


def test_a_tail_envelope_that_does_not_follow_the_chain_base(world: World,
                                                              open_replica: ReplicaFactory) -> None:
    fresh = world.fresh(open_replica)
    data = world.bundle()
    bundle = decode_bundle(data)
    base, _head = world.snap.heads[world.admin.device_id]
    wires = []
    for wire in bundle.envelopes:
        env = open_envelope(wire)
        if env.author == world.admin.device_id and env.seq == base + 1:  # signed, but on another prev
            wire = seal(world.admin.identity, env.space, env.seq, b"\x55" * 32, env.hlc, env.payload).wire
        wires.append(wire)
    result = fresh.import_bundle(rebundle(world.admin, data, envelopes=wires))
    assert result.snapshot == "applied"  # the snapshot is fine
    assert "broken-chain" in reasons(fresh)
    [held] = [q for q in fresh.quarantined(world.space) if q.author == world.admin.device_id]
    assert held.reason == "broken-chain" and held.from_seq == base + 1
    # the rest applies: the snapshot's state, the writer's tail
    assert fresh.version_vector(world.space)[world.admin.device_id] == base
    assert fresh.version_vector(world.space)[world.writer.device_id] \
        == world.admin.version_vector(world.space)[world.writer.device_id]
    assert fresh.space(world.space).get("equipment", "valve")["n"] == 102
    assert fresh.space(world.space).get("equipment", "pump")["n"] == 11  # the snapshot's


def test_a_snapshot_of_another_space(world: World, open_replica: ReplicaFactory) -> None:
    other = world.admin.space("elsewhere").id
    wrong = world.admin.snapshot(other)
    refused_then_tail(world, open_replica, wrong, "snapshot-wrong-space")


# -- the format -----------------------------------------------------------------------------------
def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    block = text.split("<!-- snapshot-vectors:begin -->")[1].split("<!-- snapshot-vectors:end -->")[0].strip()
    assert block == sv.markdown(), "regenerate with: python -m tests.snapshot_vectors"
    out: dict[str, bytes] = {}
    for line in block.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"not a vector row: {line[:80]}"
        out[match["name"]] = bytes.fromhex(match["hex"])
    return out


def test_the_documented_vector_is_what_the_code_makes_and_reads_back() -> None:
    vectors = doc_vectors()
    assert set(vectors) == {name for name, _what, _data in sv.vectors()}
    snap = sn.decode_snapshot(vectors["snapshot"])
    assert snap.author_key == sv.ALICE.public_key and snap.space == sv.SPACE_ID and snap.hlc == sv.HLC
    assert snap.version_vector == {sv.ALICE.id: 2, sv.BOB.id: 1} and snap.nonce == sv.NONCE
    assert snap.epoch_id == sv.EPOCH_ID
    assert vectors["signature input"] == sn.SIGN_DOMAIN + cbor2.dumps(cbor2.loads(vectors["snapshot"])[:-1],
                                                                     canonical=True)
    assert vectors["covered digest"] == sn.covered_digest(snap.covered)
    keys = {sv.EPOCH_ID: sv.EPOCH_KEY}
    assert sn.open_snapshot(snap, keys.get) == sv.ENTITIES
    assert sn.encode_body(sv.ENTITIES) == vectors["body"]
    with pytest.raises(Rejected) as caught:
        sn.open_snapshot(snap, {sv.EPOCH_ID: bytes(32)}.get)
    assert caught.value.reason == "snapshot-undecryptable"
    with pytest.raises(Rejected) as caught:
        sn.open_snapshot(snap, {}.get)
    assert caught.value.reason == "snapshot-no-key"


@pytest.mark.parametrize("mutate, reason", [
    (lambda items: items[:-1], "snapshot-malformed"),
    (lambda items: [2, *items[1:]], "snapshot-unknown-version"),
    (lambda items: [*items[:4], list(reversed(items[4])), *items[5:]], "snapshot-malformed"),
    (lambda items: [*items[:3], 1 << 62, *items[4:]], "snapshot-malformed"),
    (lambda items: [*items[:4], [], *items[5:]], "snapshot-malformed"),
])
def test_malformed_records_are_refused_with_a_reason(mutate: object, reason: str) -> None:
    items = cbor2.loads(sv.build().wire)
    wire = cbor2.dumps(mutate(items), canonical=True)  # type: ignore[operator]
    with pytest.raises(Rejected) as caught:
        sn.decode_snapshot(wire)
    assert caught.value.reason == reason
    with pytest.raises(Rejected) as caught:
        sn.decode_snapshot(sv.build().wire + b"\x00")  # trailing bytes
    assert caught.value.reason == "snapshot-malformed"


def test_the_cli_exports_a_snapshot_for_a_device_never_met(tmp_path: Path) -> None:
    from crdt_sync.cli import main

    with Replica(tmp_path / "a", seal_interval=0) as admin, Replica(tmp_path / "c") as newcomer:
        space = share(admin, name="site")
        for i in range(20):
            edit(admin, space, "pump", i)
        admin.grant(space, newcomer.device_id, "write")
        device = newcomer.device_id
    out = tmp_path / "for-c.bundle"
    assert main(["export", space, "--data", str(tmp_path / "a"), "--for", device, "--out", str(out)]) == 0
    assert decode_bundle(out.read_bytes()).snapshot is not None
    assert main(["export", space, "--data", str(tmp_path / "a"), "--out", str(tmp_path / "full")]) == 0
    assert decode_bundle((tmp_path / "full").read_bytes()).snapshot is None
    assert main(["import", str(out), "--data", str(tmp_path / "c")]) == 0
    with Replica(tmp_path / "c") as newcomer:
        assert newcomer.space(space).get("equipment", "pump")["n"] == 19
