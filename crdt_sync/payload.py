"""What a replica puts inside an envelope's payload.

``payload = CBOR [2, [[collection, entity_id, items], ...]]``: the payload format version
(:data:`PAYLOAD_VERSION`), then the entities. ``items`` is a byte string of concatenated
``u64 hlc | u32 length | yjs update`` (little endian): this build's writers put one item per
entity per envelope (the merged updates of the transactions sealed together:
:func:`crdt_sync.sealing.merged_items`); readers take any number. Items are packed by hand
rather than as CBOR arrays: they are built once per edit on the write path, and the same bytes
(merged) are stored as the entity's part.

Format 1 (before the version was written) is the bare array of entities; it is still read,
never written. A payload of a format this build does not know is refused with
:class:`PayloadVersionError`, naming the version, so that an older reader says "upgrade"
instead of "malformed". The payload is exactly one CBOR item: trailing bytes are refused.
See docs/DESIGN.md, "The data layer".
"""

from __future__ import annotations

import struct

import cbor2

from .cbor_exact import loads_exact
from .values import check_name

#: The payload format this build writes. Readers accept :data:`READABLE_VERSIONS`.
PAYLOAD_VERSION = 2
#: Format 1 is the unversioned array of entities written before format 2.
READABLE_VERSIONS = (1, 2)

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


class PayloadVersionError(ValueError):
    """A payload of a format this build does not read (written by a newer crdt-sync)."""

    def __init__(self, version: int) -> None:
        super().__init__(f"payload format {version}; this build reads formats "
                         f"{', '.join(map(str, READABLE_VERSIONS))}: upgrade crdt-sync to read it")
        self.version = version


def encode_payload(chunk: list[tuple[str, str, bytes]]) -> bytes:
    return cbor2.dumps([PAYLOAD_VERSION, [list(c) for c in chunk]], canonical=True)


def decode_payload(payload: bytes) -> list[tuple[str, str, bytes, list[tuple[int, bytes]]]]:
    """Raises PayloadVersionError on a format this build does not read, ValueError (or a
    cbor2 error) on anything malformed, trailing bytes included."""
    top = loads_exact(payload)
    if not isinstance(top, list):
        raise ValueError("payload is not an array")
    if top and type(top[0]) is int:  # [version, entities]; format 1 starts with an entity
        version = top[0]
        if version > PAYLOAD_VERSION:
            raise PayloadVersionError(version)
        if version < 2 or len(top) != 2 or not isinstance(top[1], list):
            raise ValueError("payload is neither [version >= 2, [entity, ...]] nor format 1's [entity, ...]")
        chunk = top[1]
    else:
        chunk = top
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
