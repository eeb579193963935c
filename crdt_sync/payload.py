"""What a replica puts inside an envelope's payload.

``payload = CBOR [[collection, entity_id, items], ...]`` where ``items`` is a byte string of
concatenated ``u64 hlc | u32 length | yjs update`` (little endian), one per local
transaction that touched the entity. Items are packed by hand rather than as CBOR arrays:
they are built once per edit on the write path, and the same bytes are stored as the
entity's part, so sealing never re-encodes them.
"""

from __future__ import annotations

import struct

import cbor2

from .values import check_name

#: ``u64 hlc | u32 length`` before each update (an item is this header + the update)
ITEM_HEADER = _ITEM = struct.Struct("<QI")


def pack_item(hlc: int, update: bytes) -> bytes:
    return _ITEM.pack(hlc, len(update)) + update


def item_hlc(item: bytes) -> int:
    """The time of one packed item (its first 8 bytes)."""
    return int.from_bytes(item[:8], "little")


def unpack_items(blob: bytes) -> list[tuple[int, bytes]]:
    """Raises ValueError on a malformed blob."""
    out = []
    off = 0
    end = len(blob)
    while off < end:
        if off + _ITEM.size > end:
            raise ValueError("truncated item header")
        hlc, length = _ITEM.unpack_from(blob, off)
        off += _ITEM.size
        if off + length > end:
            raise ValueError("truncated item")
        out.append((hlc, blob[off:off + length]))
        off += length
    return out


def encode_payload(chunk: list[tuple[str, str, bytes]]) -> bytes:
    return cbor2.dumps([list(c) for c in chunk])


def decode_payload(payload: bytes) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
    """Raises ValueError (or a cbor2 error) on anything malformed."""
    chunk = cbor2.loads(payload)
    if not isinstance(chunk, list):
        raise ValueError("payload is not an array")
    out = []
    for entry in chunk:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ValueError("payload entry is not [collection, id, items]")
        coll, ent, blob = entry
        check_name("collection", coll)
        check_name("entity id", ent)
        if not isinstance(blob, bytes) or not blob:
            raise ValueError("items are not a non-empty byte string")
        out.append((coll, ent, blob, unpack_items(blob)))
    return out
