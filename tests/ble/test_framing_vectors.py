"""docs/PROTOCOL.md's BLE framing vectors are what the framing sends, and they decode."""

from pathlib import Path

from crdt_sync.transports.ble._framing import ChunkChannel, Frame, open_chunk
from tests.ble.vectors import FORTY, PING, markdown, vectors

DOC = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def test_doc_holds_the_current_vectors() -> None:
    text = DOC.read_text()
    block = text.split("<!-- ble-vectors:begin -->")[1].split("<!-- ble-vectors:end -->")[0].strip()
    assert block == markdown(), "regenerate with: python -m tests.ble.vectors"


def test_the_data_vectors_reassemble() -> None:
    chunks = [chunk for _what, chunk in vectors()]
    peer = ChunkChannel(512)
    assert peer.feed(chunks[0]) == peer.feed(chunks[2]) == []  # OPEN, then a CREDIT
    assert ChunkChannel(512).feed(chunks[3]) == [Frame(PING)]
    empty = ChunkChannel(512)
    empty._recv_seq = 5  # as if five chunks had gone before
    assert empty.feed(chunks[4]) == [Frame(b"")]
    forty = ChunkChannel(20)
    forty._recv_seq = 254
    assert [e for c in chunks[5:] for e in forty.feed(c)] == [Frame(FORTY)]
    assert chunks[1] == open_chunk(8, 20)
