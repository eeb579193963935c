"""The message and error enums: docs/PROTOCOL.md names them, and peek_type agrees with decode."""

import re
from pathlib import Path

from crdt_sync.protocol.messages import ERROR_NAMES, ErrorCode, MessageType, decode, peek_type
from tests.protocol_vectors import vectors

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def _section(title: str) -> str:
    return DOC.read_text().split(f"## {title}\n")[1].split("\n## ")[0]


def test_doc_names_every_message_type() -> None:
    rows = re.findall(r"^\| (\d+) \| `([A-Z]+)` \|", _section("Messages"), re.M)
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
        assert type(decode(frame)).__name__.upper() == kind.name  # Hello is HELLO, and so on


def test_peek_type_of_what_is_not_a_frame() -> None:
    for frame in (b"", b"\x82", b"\x00\x00", b"\xa1\x00\x00", b"\x81\x0a", b"\x82\x18\x20"):
        assert peek_type(frame) is None
    assert peek_type(b"\x82\x09\x00") is MessageType.BYE
