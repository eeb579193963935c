"""docs/PROTOCOL.md's test vectors are what the implementation sends, and they decode."""

from pathlib import Path

from crdt_sync.protocol.messages import decode, encode
from tests.protocol_vectors import markdown, vectors

DOC = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


def test_doc_holds_the_current_vectors() -> None:
    text = DOC.read_text()
    block = text.split("<!-- vectors:begin -->")[1].split("<!-- vectors:end -->")[0].strip()
    assert block == markdown(), "regenerate with: python -m tests.protocol_vectors"


def test_every_vector_round_trips() -> None:
    for _name, _what, frame in vectors():
        assert encode(decode(frame)) == frame
