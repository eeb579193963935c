"""The payload carries its format version, and every decode of signed content takes exactly
one CBOR item: a newer payload is refused by name ("upgrade"), trailing bytes after a
payload, an envelope, a register or a list element are refused, and a register key names
its client in exactly one spelling. Each case is a signature-valid envelope from a
stranger's key, received by a real replica (docs/DESIGN.md, "The data layer")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from pycrdt import Array, Doc, Map

from crdt_sync import Rejected, Replica
from crdt_sync.envelope import open_envelope
from crdt_sync.identity import Identity
from crdt_sync.payload import PAYLOAD_VERSION, PayloadVersionError, decode_payload, encode_payload, pack_item
from tests.sync_helpers import SPACE, admit, data_payload

HLC = 1_700_000_000_000 << 16
STRANGER = Identity(bytes([7]) * 32)


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    with Replica(tmp_path / "r") as r:
        admit(r).space(SPACE).put("eq", "mine", {"ok": True})
        yield r


def envelope(payload: bytes, key: Identity = STRANGER) -> bytes:
    """An envelope whose (plaintext) ``payload`` is encrypted as a member of the space seals it."""
    part = [1, SPACE, key.public_key, 1, b"", HLC, data_payload(key, 1, payload)]
    return cbor2.dumps([*part, key.sign(cbor2.dumps(part, canonical=True))], canonical=True)


def register_update(key: str, raw: Any) -> bytes:
    doc: Doc[Any] = Doc(client_id=5)
    doc.get("f", type=Map)[key] = raw
    return doc.get_update()


def entry(hlc: int = HLC) -> bytes:
    return cbor2.dumps([hlc, STRANGER.id, 0, "ok"])


def one(update: bytes, version: int = PAYLOAD_VERSION) -> bytes:
    return cbor2.dumps([version, [["eq", "pump", pack_item(HLC, update)]]])


def refused(replica: Replica, wire: bytes, reason: str) -> Rejected:
    with pytest.raises(Rejected) as info:
        replica.receive([wire], source="peer:test")
    assert info.value.reason == reason, info.value
    assert replica.space(SPACE).get("eq", "mine") == {"ok": True}
    assert STRANGER.id not in replica.version_vector(SPACE)
    return info.value


def test_the_writer_puts_the_version_first() -> None:
    payload = encode_payload([("eq", "pump", pack_item(HLC, b"\x00\x00"))])
    assert cbor2.loads(payload)[0] == PAYLOAD_VERSION == 2
    assert decode_payload(payload) == [("eq", "pump", pack_item(HLC, b"\x00\x00"), [(HLC, b"\x00\x00")])]


def test_a_well_made_payload_is_accepted(replica: Replica) -> None:
    replica.receive([envelope(one(register_update("status\x005", entry())))], source="peer:test")
    assert replica.space(SPACE).get("eq", "pump") == {"status": "ok"}


def test_format_1_is_still_read(replica: Replica) -> None:
    legacy = cbor2.dumps([["eq", "pump", pack_item(HLC, register_update("status\x005", entry()))]])
    replica.receive([envelope(legacy)], source="peer:test")
    assert replica.space(SPACE).get("eq", "pump") == {"status": "ok"}


def test_a_newer_payload_is_refused_by_name(replica: Replica) -> None:
    newer = one(register_update("status\x005", entry()), version=PAYLOAD_VERSION + 1)
    with pytest.raises(PayloadVersionError) as direct:
        decode_payload(newer)
    assert direct.value.version == PAYLOAD_VERSION + 1
    rejected = refused(replica, envelope(newer), "unknown-version")
    assert f"payload format {PAYLOAD_VERSION + 1}" in rejected.detail
    assert "upgrade crdt-sync" in rejected.detail


@pytest.mark.parametrize("bad", [
    pytest.param(cbor2.dumps([0, []]), id="version-0"),
    pytest.param(cbor2.dumps([1, []]), id="version-1-in-versioned-form"),
    pytest.param(cbor2.dumps([2]), id="no-entities"),
    pytest.param(cbor2.dumps([2, [], []]), id="three-items"),
    pytest.param(cbor2.dumps([2, "x"]), id="entities-not-an-array"),
])
def test_a_malformed_versioned_payload_is_refused(replica: Replica, bad: bytes) -> None:
    refused(replica, envelope(bad), "bad-payload")


def test_trailing_bytes_after_a_payload_are_refused(replica: Replica) -> None:
    good = one(register_update("status\x005", entry()))
    rejected = refused(replica, envelope(good + b"\x00"), "bad-payload")
    assert "trailing" in rejected.detail


def test_trailing_bytes_after_an_envelope_are_refused(replica: Replica) -> None:
    wire = envelope(one(register_update("status\x005", entry())))
    with pytest.raises(Rejected) as info:
        open_envelope(wire + b"\x01")
    assert info.value.reason == "malformed" and "trailing" in info.value.detail
    refused(replica, wire + b"\x01", "malformed")


def test_trailing_bytes_after_a_register_are_refused(replica: Replica) -> None:
    refused(replica, envelope(one(register_update("status\x005", entry() + b"\x00"))), "bad-payload")


def test_trailing_bytes_after_a_list_element_are_refused(replica: Replica) -> None:
    doc: Doc[Any] = Doc(client_id=5)
    doc.get("f", type=Map)["tags\x005"] = cbor2.dumps([HLC, STRANGER.id, 2, None])
    doc.get("l\x00tags", type=Array).append(cbor2.dumps("a") + b"\x00")
    refused(replica, envelope(one(doc.get_update())), "bad-payload")


@pytest.mark.parametrize("client", ["05", "\u0665", "+5", "", str(2**64)])
def test_a_register_key_names_its_client_in_one_spelling(replica: Replica, client: str) -> None:
    # "05" and the Arabic-Indic digit five both read as client 5 before: two keys of one
    # client, whose tie the winner order then broke by comparing the values themselves.
    refused(replica, envelope(one(register_update(f"status\x00{client}", entry()))), "bad-payload")
