"""BLE framing test vectors: `python -m tests.ble.vectors` prints the table of docs/PROTOCOL.md,
"BLE framing"; tests/ble/test_framing_vectors.py checks that the doc holds them."""

from __future__ import annotations

from crdt_sync.transports.ble._framing import credit_chunk, open_chunk, split

#: A PING frame (``820607``) and a 40-byte frame, split at the smallest chunk (MTU 23).
PING = bytes.fromhex("820607")
FORTY = bytes(range(40))


def vectors() -> list[tuple[str, bytes]]:
    out = [("OPEN: version 1, window 32, max chunk 512 (MTU 517)", open_chunk(32, 512)),
           ("OPEN: version 1, window 8, max chunk 20 (MTU 23)", open_chunk(8, 20)),
           ("CREDIT: 16 more chunks", credit_chunk(16)),
           ("DATA: PING 7 (`820607`) in one chunk, seq 0, FIRST and LAST", split(PING, 512)[0]),
           ("DATA: the empty frame, seq 5", split(b"", 512, seq=5)[0])]
    for i, chunk in enumerate(split(FORTY, 20, seq=254)):
        out.append((f"DATA: bytes 00..27 (40 bytes) at max chunk 20, chunk {i + 1}", chunk))
    return out


def markdown() -> str:
    rows = ["| chunk | what | bytes (hex) |", "| --- | --- | --- |"]
    rows += [f"| {i + 1} | {what} | `{chunk.hex()}` |" for i, (what, chunk) in enumerate(vectors())]
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
