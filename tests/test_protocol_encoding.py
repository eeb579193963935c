"""messages.py owns the encoding: docs/PROTOCOL.md names the enums, peek_type agrees with
decode, and the pre-encoded envelope path makes the bytes encode makes."""

import re
from pathlib import Path

import cbor2

from crdt_sync.protocol.messages import (
    ERROR_NAMES,
    Envelopes,
    ErrorCode,
    MessageType,
    WireEnvelope,
    decode,
    encode,
    peek_type,
)
from crdt_sync.protocol.prebuilt import encode_envelopes, envelope_item
from tests.protocol_vectors import vectors

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def _section(title: str) -> str:
    return DOC.read_text().split(f"## {title}\n")[1].split("\n## ")[0]


def test_doc_names_every_message_type() -> None:
    rows = re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", _section("Messages"), re.M)
    assert [(int(n), name) for n, name in rows] == [(t.value, t.name) for t in MessageType]


def test_doc_names_every_error_code() -> None:
    rows = re.findall(r"^\| (\d+) \| ([a-z-]+) \| `([A-Z_]+)` \|", _section("Error codes"), re.M)
    assert [(int(n), label, member) for n, label, member in rows] == [
        (c.value, c.label, c.name) for c in ErrorCode]
    assert set(ERROR_NAMES) == set(ErrorCode)


def test_peek_type_is_the_decoded_type() -> None:
    for _name, _what, frame in vectors():
        kind = peek_type(frame)
        assert kind is not None
        assert type(decode(frame)).__name__.upper() == kind.name.replace("_", "")  # ClockSkew is CLOCK_SKEW


def test_peek_type_of_what_is_not_a_frame() -> None:
    unknown = bytes([0x81, int(max(MessageType)) + 1])  # the first type past the last defined
    for frame in (b"", b"\x82", b"\x00\x00", b"\xa1\x00\x00", unknown, b"\x82\x18\x20"):
        assert peek_type(frame) is None
    assert peek_type(b"\x82\x09\x00") is MessageType.BYE


def test_an_envelope_item_from_its_tail_is_what_encode_makes() -> None:
    key = bytes(range(32))
    for ref in (0, 23, 24, 255, 256, 70000, key):
        wire = WireEnvelope(ref, 7, 2**40, b"payload", bytes(64))
        tail = b"".join(cbor2.dumps(v, canonical=True) for v in (7, 2**40, b"payload", bytes(64)))
        assert encode(Envelopes(1, 2, [wire])) == encode_envelopes(1, 2, [envelope_item(ref, tail)])
