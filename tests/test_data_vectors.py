"""docs/DESIGN.md's data-layer vectors are what the code makes, and each means what its row
says: read back by the reference (entity documents, payload and envelope decoders, a real
replica receiving the envelopes), every vector in the document is checked, and a vector
added to the document without a check here fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from pycrdt import Doc, Map

from crdt_sync import NotFound, Rejected, Replica
from crdt_sync.entity import KIND_LIST, KIND_REMOVED, KIND_TEXT, KIND_VALUE, EntityDoc, Entry
from crdt_sync.envelope import open_envelope, seal
from crdt_sync.hlc import COUNTER_BITS, hlc_to_iso
from crdt_sync.identity import verify
from crdt_sync.payload import decode_payload, encode_payload, pack_item, unpack_items
from tests import data_vectors as dv
from tests.sync_helpers import SPACE, admit, data_payload

DOC = Path(__file__).resolve().parent.parent / "docs" / "DESIGN.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<what>.+) \| `(?P<hex>[0-9a-f]+)` \|$")


def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    block = text.split("<!-- data-vectors:begin -->")[1].split("<!-- data-vectors:end -->")[0].strip()
    assert block == dv.markdown(), "regenerate with: python -m tests.data_vectors"
    out: dict[str, bytes] = {}
    for line in block.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"not a vector row: {line[:80]}"
        out[match["name"]] = bytes.fromhex(match["hex"])
    return out


V = doc_vectors()


def entity(*updates: bytes) -> EntityDoc:
    ent = EntityDoc(("s", "c", "e"), 99, lambda _ent, _event: None)
    for update in updates:
        ent.apply(update)
    return ent


def marker(raw: bytes) -> EntityDoc:
    return entity(dv.update(dv.ALICE_CLIENT, {"status\x001": raw}))


def check_hlc(data: bytes) -> None:
    hlc = cbor2.loads(data)
    assert hlc == dv.H and hlc >> COUNTER_BITS == dv.WALL_MS and hlc & 0xFFFF == 1
    assert hlc_to_iso(hlc) == "2026-01-01T00:00:00.000Z" and hlc < 2**62  # the clock range


def check_register_key(data: bytes) -> None:
    assert data.decode("utf-8").rpartition("\x00") == ("status", "\x00", "1")


def check_register(data: bytes) -> None:
    ent = entity(V["update"])
    assert ent.winner("status") == Entry(dv.H, dv.ALICE.id, dv.ALICE_CLIENT, KIND_VALUE, "ok")
    assert cbor2.loads(data) == [dv.H, dv.ALICE.id, 0, "ok"]
    assert ent.fields() == {"status": "ok"}


def check_text_marker(data: bytes) -> None:
    ent = marker(data)
    assert ent.winner("status").kind == KIND_TEXT and ent.fields() == {"status": ""}  # type: ignore[union-attr]


def check_list_marker(data: bytes) -> None:
    ent = marker(data)
    assert ent.winner("status").kind == KIND_LIST and ent.fields() == {"status": []}  # type: ignore[union-attr]


def check_removed(data: bytes) -> None:
    ent = marker(data)
    assert ent.winner("status").kind == KIND_REMOVED and ent.fields() == {}  # type: ignore[union-attr]
    assert ent.exists()  # a removed field is not a deleted entity


def check_update(data: bytes) -> None:
    doc: Doc[Any] = Doc()
    doc.apply_update(data)
    assert dict(doc.get("f", type=Map).items()) == {"status\x001": V["register"]}


def check_item(data: bytes) -> None:
    assert unpack_items(data) == [(dv.H, V["update"])]
    assert data[:8] == dv.H.to_bytes(8, "little") and data[8:12] == len(V["update"]).to_bytes(4, "little")


def check_payload(data: bytes) -> None:
    assert cbor2.loads(data)[0] == 2
    assert decode_payload(data) == [(dv.COLLECTION, dv.ENTITY, V["item"], [(dv.H, V["update"])])]


def check_signature_input(data: bytes) -> None:
    env = open_envelope(V["envelope"])
    assert verify(dv.ALICE.public_key, data, env.signature)
    assert data == cbor2.dumps(cbor2.loads(V["envelope"])[:7], canonical=True)
    assert cbor2.loads(data)[4] == b""  # seq 1's prev_hash: the empty byte string


def check_envelope(data: bytes) -> None:
    env = open_envelope(data)
    assert (env.version, env.space, env.author, env.seq, env.prev_hash, env.hlc, env.payload) == \
        (1, dv.SPACE, dv.ALICE.id, 1, b"", dv.H, V["payload"])


def check_envelope_hash(data: bytes) -> None:
    assert data == open_envelope(V["envelope"]).hash == dv.envelope_hash_of(V["envelope"])
    assert open_envelope(V["envelope 2"]).prev_hash == data


def check_tombstone(data: bytes) -> None:
    ((_c, _e, _blob, items),) = decode_payload(open_envelope(V["envelope 2"]).payload)
    ent = entity(V["update"], items[0][1])
    won = ent.winner("\x01deleted")
    assert won is not None and won.value is True and cbor2.loads(data) == [won.hlc, dv.ALICE.id, 0, True]
    assert ent.deleted and not ent.exists()


def check_envelope_2(data: bytes) -> None:
    env = open_envelope(data)
    assert (env.seq, env.prev_hash, env.author) == (2, V["envelope hash"], dv.ALICE.id)


def check_revival(data: bytes) -> None:
    ((_c, _e, _blob, items),) = decode_payload(open_envelope(V["envelope 2"]).payload)
    revive = dv.update(dv.ALICE_CLIENT, {"\x01deleted\x001": data}, (V["update"], items[0][1]))
    ent = entity(V["update"], items[0][1], revive)
    assert not ent.deleted and ent.fields() == {"status": "ok"}


def check_conflict_tie(data: bytes) -> None:
    for order in ((V["update"], data), (data, V["update"])):
        ent = entity(*order)
        assert ent.winner("status") == Entry(dv.H, dv.ALICE.id, dv.ALICE_CLIENT, KIND_VALUE, "ok")
        _won, losers = ent.conflicts()["status"]
        assert [(e.author, e.value) for e in losers] == [(dv.CAROL.id, "broken")]
    assert dv.CAROL.public_key > dv.ALICE.public_key and dv.CAROL.id < dv.ALICE.id


def check_conflict_later(data: bytes) -> None:
    for order in ((V["update"], data), (data, V["update"])):
        ent = entity(*order)
        assert ent.winner("status") == Entry(dv.H + 1, dv.BOB.id, dv.BOB_CLIENT, KIND_VALUE, "broken")
    assert dv.ALICE.id > dv.BOB.id and dv.ALICE_CLIENT < dv.BOB_CLIENT


CHECKS: dict[str, Callable[[bytes], None]] = {
    "hlc": check_hlc, "register key": check_register_key, "register": check_register,
    "text marker": check_text_marker, "list marker": check_list_marker, "removed": check_removed,
    "update": check_update, "item": check_item, "payload": check_payload,
    "signature input": check_signature_input, "envelope": check_envelope,
    "envelope hash": check_envelope_hash, "tombstone": check_tombstone, "envelope 2": check_envelope_2,
    "revival": check_revival, "conflict: tie": check_conflict_tie, "conflict: later": check_conflict_later,
}


def test_every_vector_in_the_doc_is_checked() -> None:
    assert set(V) == set(CHECKS) == {name for name, _what, _data in dv.vectors()}


@pytest.mark.parametrize("name", list(CHECKS))
def test_vector(name: str) -> None:
    CHECKS[name](V[name])


def _signed(key: Any, update: bytes, hlc: int) -> bytes:
    payload = encode_payload([(dv.COLLECTION, dv.ENTITY, pack_item(hlc, update))])
    return seal(key, SPACE, 1, b"", hlc, data_payload(key, 1, payload)).wire


def _member_copy(wire: bytes, key: Any, prev: bytes = b"") -> bytes:
    """The vector envelope as a member seals it in a space bound to a key: its plaintext
    payload (the vector) encrypted, in the test space (docs/DESIGN.md, "Encryption")."""
    env = open_envelope(wire)
    return seal(key, SPACE, env.seq, prev, env.hlc, data_payload(key, env.seq, env.payload)).wire


def test_a_replica_accepts_the_envelopes_and_picks_the_same_winners(tmp_path: Path) -> None:
    with Replica(tmp_path / "r") as r:
        admit(r)
        with pytest.raises(Rejected) as refused:  # a device seals only encrypted payloads
            r.receive([V["envelope"]], source="vectors")
        assert refused.value.reason == "plaintext"
        first = _member_copy(V["envelope"], dv.ALICE)
        r.receive([first], source="vectors")
        assert r.space(SPACE).get(dv.COLLECTION, dv.ENTITY) == {"status": "ok"}
        r.receive([_signed(dv.CAROL, V["conflict: tie"], dv.H)], source="vectors")
        assert r.space(SPACE).get(dv.COLLECTION, dv.ENTITY) == {"status": "ok"}
        (conflict,) = r.space(SPACE).conflicts()
        assert (conflict.winner.value, [w.value for w in conflict.losers]) == ("ok", ["broken"])
        r.receive([_signed(dv.BOB, V["conflict: later"], dv.H + 1)], source="vectors")
        assert r.space(SPACE).get(dv.COLLECTION, dv.ENTITY) == {"status": "broken"}
        # the tombstone, a second later
        r.receive([_member_copy(V["envelope 2"], dv.ALICE, open_envelope(first).hash)], source="vectors")
        with pytest.raises(NotFound):
            r.space(SPACE).get(dv.COLLECTION, dv.ENTITY)
        assert r.version_vector(SPACE) == {dv.ALICE.id: 2, dv.CAROL.id: 1, dv.BOB.id: 1}
