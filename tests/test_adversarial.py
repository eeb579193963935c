"""Hostile or damaged input: every bad bundle or envelope is refused with the reason a caller
can act on, changes nothing (entities, conflicts, version vectors, on disk too), is recorded
in ``rejections()``, and never crashes the replica. Attacks are built with the engine's own
signing code and real device keys (read from a victim's store, as a thief of a cloned
device image would)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map

from crdt_sync import Rejected, Replica, StoreError, StoreVersionError, forks
from crdt_sync.bundle import BUNDLE_VERSION, encode_bundle
from crdt_sync.envelope import MAX_ENVELOPE_BYTES, envelope_hash, open_envelope, seal
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.space_crypto import encrypt_payload
from crdt_sync.store import STORE_FORMAT
from tests.helpers import ManualClock, bundle_parts, device_seed, exchange, space_state
from tests.sync_helpers import SITE_EPOCH_ID, SITE_EPOCH_KEY, admit

SPACE = "s" + "c" * 32  # an id: spaces are named by ids on the wire
KEYS = {("eq", "pump"), ("eq", "valve"), ("eq", "cached")}


class World:
    """An author ``a`` with a chain of four envelopes, and a ``target`` that has a's first
    envelope, edits of its own, a conflict, and one entity loaded in memory."""

    def __init__(self, tmp: Path) -> None:
        self.clock_a, self.clock_t = ManualClock(1_700_000_000_000), ManualClock(1_700_000_000_000)
        self.a = admit(Replica(tmp / "a", wall=self.clock_a), SPACE)
        self.target = admit(Replica(tmp / "target", wall=self.clock_t), SPACE)
        sp = self.a.space(SPACE)
        sp.put("eq", "pump", {"status": "ok", "n": 1})
        self.a.seal()
        exchange(self.a, self.target, SPACE)
        # Concurrent writes to one field: a conflict on the target once a's seq 2 arrives.
        self.clock_a.advance(100)
        sp.put("eq", "pump", {"status": "worn"})
        self.a.seal()
        self.clock_t.advance(50)
        self.target.space(SPACE).put("eq", "pump", {"status": "replaced"})
        exchange(self.a, self.target, SPACE)
        for i in range(2):
            self.clock_a.advance(10)
            sp.put("eq", "valve", {"turns": i})
            with sp.transaction() as tx:
                tx.entity("eq", "cached").text("notes").append(f"note {i}. ")
            self.a.seal()
        self.target.space(SPACE).put("eq", "cached", {"local": True})
        self.target.space(SPACE).get("eq", "cached")  # loaded: applies to a cached doc too
        assert self.target.space(SPACE).conflicts(), "the setup should hold a conflict"
        self.seed_a = device_seed(tmp / "a")
        self.key_a = Identity(self.seed_a)

    def missing(self) -> bytes:
        """A valid bundle of what the target lacks from a (two envelopes)."""
        return self.a.export_bundle(SPACE, since=self.target.version_vector(SPACE))

    def envelopes(self) -> list[bytes]:
        return bundle_parts(self.a.export_bundle(SPACE))[4]

    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last envelope of a's chain that the target has."""
        seq = self.target.version_vector(SPACE)[self.a.device_id]
        return seq, open_envelope(self.envelopes()[seq - 1]).hash

    def close(self) -> None:
        self.a.close()
        self.target.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def assert_refused(replica: Replica, data: bytes, reason: str | set[str],
                   reopen: bool = False) -> Rejected:
    """Import ``data``: it must be refused with ``reason``, change nothing and be recorded.
    With ``reopen``, also check the directory from disk alone (this closes ``replica``)."""
    reasons = {reason} if isinstance(reason, str) else reason
    before = space_state(replica, SPACE, KEYS)
    recorded = len(replica.rejections(limit=10**6))
    with pytest.raises(Rejected) as info:
        replica.import_bundle(data, source="usb-stick")
    assert info.value.reason in reasons, info.value
    assert space_state(replica, SPACE, KEYS) == before
    rejections = replica.rejections(limit=10**6)
    assert len(rejections) == recorded + 1
    assert (rejections[0].reason, rejections[0].source) == (info.value.reason, "usb-stick")
    if reopen:
        path = replica.path
        replica.close()
        with Replica(path) as again:
            assert space_state(again, SPACE, KEYS) == before
    return info.value


def raw_envelope(key: Identity, seq: int, prev: bytes, payload: bytes, *, hlc: int = 1 << 40,
                 version: int = 1, space: str = SPACE, author: bytes | None = None,
                 signer: Identity | None = None, encrypt: bool = True) -> bytes:
    """An envelope signed by ``signer`` (default ``key``) claiming ``author`` (default ``key``),
    built field by field so that it can be wrong in exactly one way. ``payload`` is
    encrypted as a member of the space would (unless ``encrypt`` is false)."""
    claimed = author or key.public_key
    if encrypt:
        payload = encrypt_payload(SITE_EPOCH_KEY, SITE_EPOCH_ID, space, claimed, seq, payload)
    part = [version, space, claimed, seq, prev, hlc, payload]
    signature = (signer or key).sign(cbor2.dumps(part, canonical=True))
    return cbor2.dumps([*part, signature], canonical=True)


def bundle_of(key: Identity, envelopes: list[bytes], space: str = SPACE) -> bytes:
    return encode_bundle(key, space, {}, {}, envelopes)


def yjs_update(**registers: Any) -> bytes:
    """A genuine Yjs update that writes raw values into an entity's register map."""
    doc: Doc[Any] = Doc()
    regs = doc.get("f", type=Map)
    for name, value in registers.items():
        regs[name] = value
    return doc.get_update()


#: A well-formed payload that changes nothing: what a forger wraps when only the
#: envelope itself is meant to be wrong.
HARMLESS = encode_payload([("eq", "pump", pack_item(1, yjs_update()))])


def yjs_list_update(elements: list[Any]) -> bytes:
    """A genuine Yjs update declaring the list field "parts" with raw ``elements`` in it
    (the engine stores each element CBOR-encoded)."""
    doc: Doc[Any] = Doc()
    doc.get("f", type=Map)["parts\x00123"] = cbor2.dumps([1 << 40, "x", 2, None])
    doc.get("l\x00parts", type=Array).extend(elements)
    return doc.get_update()


# -- signatures ------------------------------------------------------------------------------
def test_valid_bundle_is_accepted(world: World) -> None:
    # The control: the untampered bundle goes in, so every refusal below is the tampering's.
    result = world.target.import_bundle(world.missing())
    assert result.applied == 2
    author = world.a.device_id
    assert world.target.version_vector(SPACE)[author] == world.a.version_vector(SPACE)[author]


def test_flipped_envelope_signature(world: World) -> None:
    _, space, vv, since, envs = bundle_parts(world.missing())
    wire = bytearray(envs[0])
    wire[-1] ^= 0x01  # the last byte is the signature's
    # Re-signed by the exporter, so only the envelope's own signature is wrong.
    bad = encode_bundle(world.key_a, space, vv, since, [bytes(wire), *envs[1:]])
    assert_refused(world.target, bad, "bad-signature", reopen=True)


def test_flipped_bundle_signature(world: World) -> None:
    data = bytearray(world.missing())
    data[-1] ^= 0x80
    assert_refused(world.target, bytes(data), "bad-signature")


def test_envelope_altered_and_bundle_resigned_with_another_key(world: World) -> None:
    _, space, vv, since, envs = bundle_parts(world.missing())
    items = cbor2.loads(envs[0])
    items[6] = encode_payload([("eq", "pump", pack_item(items[5], yjs_update()))])  # new payload
    forged = cbor2.dumps(items, canonical=True)
    mallory = Identity.generate()
    assert_refused(world.target, encode_bundle(mallory, space, vv, since, [forged, *envs[1:]]),
                   "bad-signature", reopen=True)


def test_envelope_signed_by_another_key_in_the_authors_name(world: World) -> None:
    seq, prev = world.head()
    mallory = Identity.generate()
    env = raw_envelope(world.key_a, seq + 1, prev, HARMLESS,
                       signer=mallory)
    assert_refused(world.target, bundle_of(mallory, [env]), "bad-signature")


def test_forwarded_bundle_resigned_by_another_device_is_accepted(world: World) -> None:
    # Store-and-forward: a bundle's exporter may be anyone; authorship rests on each
    # envelope's own signature, which the forwarder cannot change.
    _, space, vv, since, envs = bundle_parts(world.missing())
    forwarder = Identity.generate()
    result = world.target.import_bundle(encode_bundle(forwarder, space, vv, since, envs))
    assert result.applied == 2
    assert result.exporter == forwarder.id


# -- chains ----------------------------------------------------------------------------------
def test_broken_chain_envelope_omitted(world: World) -> None:
    _, space, vv, since, envs = bundle_parts(world.missing())
    assert len(envs) == 2
    # Without the first missing envelope, the second does not follow anything the target has.
    assert_refused(world.target, encode_bundle(world.key_a, space, vv, since, envs[1:]), "broken-chain")


def test_broken_chain_all_or_nothing(world: World) -> None:
    # A valid, new envelope before the gap must not be applied either.
    world.clock_a.advance(10)
    world.a.space(SPACE).put("eq", "valve", {"turns": 99})
    world.a.seal()
    envs = world.envelopes()
    seq, _ = world.head()
    assert len(envs) >= seq + 3
    bundle = bundle_of(world.key_a, [envs[seq], envs[seq + 2]])  # seq+1 is new; seq+3 skips seq+2
    assert_refused(world.target, bundle, "broken-chain", reopen=True)


def test_broken_chain_wrong_prev_hash(world: World) -> None:
    seq, _ = world.head()
    env = raw_envelope(world.key_a, seq + 1, b"\x07" * 32, HARMLESS)
    assert_refused(world.target, bundle_of(world.key_a, [env]), "broken-chain")


def assert_proven(world: World, data: bytes, seq: int, reopen: bool = False) -> Replica:
    """Import ``data``, which forks a's chain at ``seq``. Before fork proofs this was refused
    with "fork" and nothing changed; now the fork is proven: the bundle is taken, the proof
    kept, the fork recorded, and a's envelopes from ``seq`` on are gone (both branches).
    With ``reopen``, also check the directory from disk alone (this closes the target)."""
    target = world.target
    recorded = len(target.rejections(limit=10**6))
    target.import_bundle(data, source="usb-stick")
    rejections = target.rejections(limit=10**6)
    assert len(rejections) == recorded + 1
    assert (rejections[0].reason, rejections[0].source) == ("fork", "usb-stick")
    after = space_state(target, SPACE, KEYS)
    for replica in [target] if not reopen else [target, Replica(target.path)]:
        if replica is not target:
            target.close()
        [proof] = replica.fork_proofs(SPACE)
        assert (forks.verify(proof).author, forks.verify(proof).seq) == (world.a.device_id, seq)
        assert replica.version_vector(SPACE).get(world.a.device_id, 0) == seq - 1
        assert space_state(replica, SPACE, KEYS) == after
        assert replica.space(SPACE).get("eq", "cached")["local"] is True  # its own edits stay
    return replica


def test_fork_same_seq_different_content(world: World) -> None:
    # Seq 1 already at the target; the thief of a's key signs another seq 1.
    env = seal(world.key_a, SPACE, 1, b"", 1 << 40, HARMLESS)
    again = assert_proven(world, bundle_of(world.key_a, [env.wire]), 1, reopen=True)
    # Rebuilt without a: the pump keeps only the target's own write.
    assert again.space(SPACE).get("eq", "pump") == {"status": "replaced"}
    again.close()


def test_fork_inside_one_bundle(world: World) -> None:
    # Two different envelopes for the same next seq, both new to the target.
    seq, prev = world.head()
    first = world.envelopes()[seq]
    other = seal(world.key_a, SPACE, seq + 1, prev, 1 << 40,
                 HARMLESS)
    assert other.hash != envelope_hash(first)
    before = space_state(world.target, SPACE, KEYS)
    assert_proven(world, bundle_of(world.key_a, [first, other.wire]), seq + 1)
    assert space_state(world.target, SPACE, KEYS) == before  # neither branch of seq 3 kept


def test_fork_from_a_cloned_device(world: World, tmp_path: Path) -> None:
    # A data directory copied with its device seed: the clone writes its own seq 1.
    clone_dir = tmp_path / "clone"
    clone_dir.mkdir()
    db = sqlite3.connect(clone_dir / "store.sqlite3")
    db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID")
    db.execute("INSERT INTO meta VALUES('device_seed', ?)", (world.seed_a,))
    db.commit()
    db.close()
    with Replica(clone_dir) as clone:
        assert clone.device_id == world.a.device_id
        admit(clone, SPACE).space(SPACE).put("eq", "pump", {"status": "from the clone"})
        assert_proven(world, clone.export_bundle(SPACE), 1, reopen=True).close()


def test_envelope_for_another_space_inside_a_bundle(world: World) -> None:
    env = raw_envelope(world.key_a, 1, b"", HARMLESS,
                       space="elsewhere")
    assert_refused(world.target, bundle_of(world.key_a, [env]), "wrong-space")


# -- damaged files ---------------------------------------------------------------------------
def test_every_truncation_is_refused(world: World) -> None:
    data = world.missing()
    step = max(1, len(data) // 150)
    cuts = sorted({0, 1, 2, len(data) - 1, len(data) - 2, *range(0, len(data), step)})
    for cut in cuts:
        assert_refused(world.target, data[:cut], "malformed")
    assert world.target.import_bundle(data).applied == 2  # the whole file still imports


# What a flipped bit may turn into: any of these, but always a refusal.
DAMAGE_REASONS = {"malformed", "bad-signature", "unknown-version", "non-canonical", "too-large"}


@pytest.fixture(scope="module")
def module_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # Shared by the Hypothesis properties: each refusal changes nothing, which each example
    # asserts, so examples cannot disturb one another.
    w = World(tmp_path_factory.mktemp("adversarial"))
    yield w
    w.close()


@settings(max_examples=150)
@given(data=st.data())
def test_bit_flips_are_refused(module_world: World, data: st.DataObject) -> None:
    bundle = bytearray(module_world.missing())
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(bundle) - 1), st.integers(0, 7)),
                               min_size=1, max_size=3, unique=True))
    for position, bit in flips:
        bundle[position] ^= 1 << bit
    assert_refused(module_world.target, bytes(bundle), DAMAGE_REASONS)


@settings(max_examples=100)
@given(junk=st.binary(max_size=2048))
def test_random_bytes_are_refused(module_world: World, junk: bytes) -> None:
    assert_refused(module_world.target, junk, "malformed")


@settings(max_examples=100)
@given(junk=st.binary(min_size=1, max_size=256))
def test_signed_envelope_with_random_yjs_update_is_refused_or_harmless(module_world: World,
                                                                       junk: bytes) -> None:
    # A signed envelope whose Yjs update is random bytes, from a device of its own (so each
    # example starts a new chain). Some random bytes are a valid (empty) Yjs update: then it
    # is accepted and must leave every entity readable and the others unchanged; otherwise
    # it is refused as bad-payload and changes nothing. Never a crash.
    target = module_world.target
    author = Identity.generate()
    env = raw_envelope(author, 1, b"", encode_payload([("eq", "cached", pack_item(1 << 40, junk))]))
    before = space_state(target, SPACE, KEYS)
    try:
        target.import_bundle(bundle_of(author, [env]))
    except Rejected as rejected:
        assert rejected.reason == "bad-payload"
        assert space_state(target, SPACE, KEYS) == before
        return
    after = space_state(target, SPACE, KEYS)  # reads every entity: none is broken
    assert after["vv"] == before["vv"] | {author.id: 1}
    for key in KEYS - {("eq", "cached")}:
        assert after["entities"][key] == before["entities"][key]


# -- well signed, badly made -----------------------------------------------------------------
def _item(update: bytes) -> bytes:
    return pack_item(1 << 40, update)


def _one(id: str, update: bytes) -> bytes:
    """A payload with one entity's one update, as encode_payload would make it."""
    return cbor2.dumps([["eq", id, _item(update)]])


def _register(entry: list[Any]) -> bytes:
    """An update writing ``entry`` as the register of field "s" by client 1."""
    return yjs_update(**{"s\x001": cbor2.dumps(entry)})


BAD_PAYLOADS: dict[str, bytes] = {
    "not-cbor": b"\xff\xfe\xfd",
    "not-an-array": cbor2.dumps({"eq": "pump"}),
    "entry-not-a-triple": cbor2.dumps([["eq", "pump"]]),
    "empty-collection": cbor2.dumps([["", "pump", _item(yjs_update())]]),
    "collection-not-str": cbor2.dumps([[5, "pump", _item(yjs_update())]]),
    # CBOR text holding a UTF-8-encoded surrogate (cbor2 refuses to write one itself).
    "surrogate-id": _one("XXXX", yjs_update()).replace(b"\x64XXXX", b"\x63\xed\xa0\x80"),
    "items-empty": cbor2.dumps([["eq", "pump", b""]]),
    "items-not-bytes": cbor2.dumps([["eq", "pump", "text"]]),
    "item-truncated-header": cbor2.dumps([["eq", "pump", b"\x01\x02\x03"]]),
    "item-truncated-update": cbor2.dumps([["eq", "pump", _item(yjs_update())[:-3]]]),
    "yjs-garbage": _one("pump", b"\x00\x01garbage"),
    "yjs-garbage-cached-entity": _one("cached", b"\x05\x05\x05\x05"),
    # Genuine Yjs updates that break the entity's own layout: its register map must hold
    # "field\0client" -> CBOR [hlc, author, kind, value].
    "register-not-cbor": _one("pump", yjs_update(**{"status\x00123": b"\xff\xff"})),
    "register-not-bytes": _one("cached", yjs_update(**{"status\x00123": "str"})),
    "register-bad-key": _one("pump", yjs_update(status=cbor2.dumps([1, "x", 0, 1]))),
    "register-wrong-shape": _one("new", _register([1, 2])),
    "register-wrong-types": _one("pump", _register(["x", 2, 0, 1])),
    "register-unknown-kind": _one("pump", _register([1, "x", 9, 1])),
    "register-nan-value": _one("pump", _register([1, "x", 0, float("nan")])),
    "list-element-not-cbor": _one("pump", yjs_list_update([b"\xff\xff"])),
    "list-element-not-bytes": _one("cached", yjs_list_update([5])),
}


@pytest.mark.parametrize("name", sorted(BAD_PAYLOADS))
def test_signed_envelope_with_malformed_payload(world: World, name: str) -> None:
    seq, prev = world.head()
    env = raw_envelope(world.key_a, seq + 1, prev, BAD_PAYLOADS[name])
    assert_refused(world.target, bundle_of(world.key_a, [env]), "bad-payload", reopen=True)


def test_oversize_envelope(world: World) -> None:
    seq, prev = world.head()
    big = encode_payload([("eq", "pump", _item(b"\x00" * MAX_ENVELOPE_BYTES))])
    env = raw_envelope(world.key_a, seq + 1, prev, big, encrypt=False)  # (zeros would compress)
    assert len(env) > MAX_ENVELOPE_BYTES
    assert_refused(world.target, bundle_of(world.key_a, [env]), "too-large", reopen=True)


def test_unknown_envelope_version(world: World) -> None:
    seq, prev = world.head()
    env = raw_envelope(world.key_a, seq + 1, prev, HARMLESS, version=2)
    assert_refused(world.target, bundle_of(world.key_a, [env]), "unknown-version")


def test_unknown_bundle_version(world: World) -> None:
    outer = cbor2.loads(world.missing())
    outer[1] = BUNDLE_VERSION + 1
    assert_refused(world.target, cbor2.dumps(outer, canonical=True), "unknown-version")


def test_non_canonical_envelope(world: World) -> None:
    # The same items encoded differently would have another hash for the same content.
    seq, _ = world.head()
    items = cbor2.loads(world.envelopes()[seq])
    wire = cbor2.dumps(items, canonical=True)
    assert wire[0] == 0x88  # an array of 8: re-encode its header in a longer form
    stretched = b"\x98\x08" + wire[1:]
    assert cbor2.loads(stretched) == items
    assert_refused(world.target, bundle_of(world.key_a, [stretched]), "non-canonical")


def test_receive_refuses_and_records_like_import(world: World) -> None:
    # The sync protocol hands envelopes to receive() directly; same checks, same record.
    seq, prev = world.head()
    env = raw_envelope(world.key_a, seq + 1, prev, b"\xff")
    before = space_state(world.target, SPACE, KEYS)
    with pytest.raises(Rejected) as info:
        world.target.receive([env], source="peer:x")
    assert info.value.reason == "bad-payload"
    assert space_state(world.target, SPACE, KEYS) == before
    assert world.target.rejections()[0].source == "peer:x"


def test_replica_keeps_working_after_refusals(world: World) -> None:
    for data in (b"", b"\x00" * 10, world.missing()[:-1]):
        with pytest.raises(Rejected):
            world.target.import_bundle(data)
    assert world.target.import_bundle(world.missing()).applied == 2
    world.target.space(SPACE).put("eq", "pump", {"after": True})
    exchange(world.target, world.a, SPACE)
    assert world.a.space(SPACE).get("eq", "pump")["after"] is True


# -- the store itself ------------------------------------------------------------------------
def test_newer_store_format_is_refused(tmp_path: Path) -> None:
    Replica(tmp_path / "d").close()
    db = sqlite3.connect(tmp_path / "d" / "store.sqlite3")
    db.execute("UPDATE meta SET value=? WHERE key='format'", (STORE_FORMAT + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match=f"format {STORE_FORMAT + 1}"):
        Replica(tmp_path / "d")
    db = sqlite3.connect(tmp_path / "d" / "store.sqlite3")
    assert db.execute("SELECT value FROM meta WHERE key='format'").fetchone()[0] == STORE_FORMAT + 1
    db.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "store.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        Replica(tmp_path / "d")
