"""Deterministic data-layer test vectors: `python -m tests.data_vectors` prints the table of
docs/DESIGN.md, "The data layer", "Test vectors"; tests/test_data_vectors.py checks that
the table is what the code makes and that every row means what its text says.

Everything here is exact: Ed25519 signatures are deterministic, and a Yjs update made by a
document with a fixed client id from a fresh start is always the same bytes.
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import cbor2
from pycrdt import Doc, Map

from crdt_sync.entity import DELETED, KIND_LIST, KIND_REMOVED, KIND_TEXT, KIND_VALUE, REGISTERS, SEP
from crdt_sync.envelope import FORMAT_VERSION, seal
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item

ALICE = Identity(bytes([1]) * 32)  # the same keys as docs/PROTOCOL.md's vectors
BOB = Identity(bytes([2]) * 32)
#: key bytes sort above Alice's (0xed... > 0x8a...), device id text below ("5ves..." < "rkeo..."):
#: the tie-break vector tells the two comparisons apart
CAROL = Identity(bytes([3]) * 32)
ALICE_CLIENT, BOB_CLIENT, CAROL_CLIENT = 1, 2, 3  # real client ids are random 53-bit numbers
SPACE, COLLECTION, ENTITY = "site-42", "equipment", "pump-7"
WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z
H = WALL_MS << 16 | 1  # that millisecond, counter 1


def register_key(field: str, client: int) -> str:
    return f"{field}{SEP}{client}"


def register_value(hlc: int, author: Identity, kind: int, value: Any) -> bytes:
    """As :meth:`crdt_sync.entity.EntityDoc.write` encodes it."""
    return cbor2.dumps([hlc, author.id, kind, value])


def update(client: int, registers: dict[str, bytes], after: tuple[bytes, ...] = ()) -> bytes:
    """The Yjs v1 update by ``client`` that sets these registers in the document made of the
    updates ``after`` (a client's next update must continue its own Yjs clock: an update
    of a fresh document would reuse its first clock values and be dropped as seen)."""
    doc: Doc[Any] = Doc(client_id=client)
    for earlier in after:
        doc.apply_update(earlier)
    state = doc.get_state()
    regs = doc.get(REGISTERS, type=Map)
    for key, raw in registers.items():
        regs[key] = raw
    return doc.get_update(state)


def _build() -> dict[str, tuple[str, bytes]]:
    reg_key = register_key("status", ALICE_CLIENT)
    reg = register_value(H, ALICE, KIND_VALUE, "ok")
    upd = update(ALICE_CLIENT, {reg_key: reg})
    item = pack_item(H, upd)
    payload = encode_payload([(COLLECTION, ENTITY, item)])
    signed = cbor2.dumps([FORMAT_VERSION, SPACE, ALICE.public_key, 1, b"", H, payload], canonical=True)
    env1 = seal(ALICE, SPACE, 1, b"", H, payload)

    h2 = H + (1000 << 16)  # one second later
    tomb = register_value(h2, ALICE, KIND_VALUE, True)
    tomb_update = update(ALICE_CLIENT, {register_key(DELETED, ALICE_CLIENT): tomb}, (upd,))
    payload2 = encode_payload([(COLLECTION, ENTITY, pack_item(h2, tomb_update))])
    env2 = seal(ALICE, SPACE, 2, env1.hash, h2, payload2)
    h3 = h2 + (1000 << 16)
    revival = register_value(h3, ALICE, KIND_VALUE, False)

    carol = register_value(H, CAROL, KIND_VALUE, "broken")
    tie_carol = update(CAROL_CLIENT, {register_key("status", CAROL_CLIENT): carol})
    bob = register_value(H + 1, BOB, KIND_VALUE, "broken")
    later_bob = update(BOB_CLIENT, {register_key("status", BOB_CLIENT): bob})
    marker = "a {} field's register: [hlc, author, {}, null]"
    return {
        "hlc": (f"the HLC {H:#x} as CBOR: wall {WALL_MS} ms (2026-01-01T00:00:00.000Z) << 16, "
                "counter 1", cbor2.dumps(H)),
        "register key": ("UTF-8 of \"status\" \\0 \"1\": field status, written by Yjs client 1",
                         reg_key.encode()),
        "register": ("its value: CBOR [hlc, author device id (text), kind 0, \"ok\"]; "
                     f"author {ALICE.id}", reg),
        "text marker": (marker.format("text", 1), register_value(H, ALICE, KIND_TEXT, None)),
        "list marker": (marker.format("list", 2), register_value(H, ALICE, KIND_LIST, None)),
        "removed": (marker.format("removed", 3), register_value(H, ALICE, KIND_REMOVED, None)),
        "update": ("Yjs v1 update of client 1: root map \"f\", key \"status\\0\" \"1\" = the register "
                   "(a Uint8Array)", upd),
        "item": ("u64 hlc, then u32 length (both little endian), then the update", item),
        "payload": (f"format 2: CBOR [2, [[\"{COLLECTION}\", \"{ENTITY}\", the item]]]", payload),
        "signature input": (f"canonical CBOR [1, \"{SPACE}\", Alice's key, seq 1, prev_hash h'' (empty), "
                            "hlc, payload]: the bytes Ed25519 signs", signed),
        "envelope": ("Alice's seq 1 in site-42 carrying the payload: the signature input's items and "
                     "the signature, one canonical CBOR array", env1.wire),
        "envelope hash": ("BLAKE2b-256 of the envelope's bytes: seq 2's prev_hash", env1.hash),
        "tombstone": (f"register key \"\\x01deleted\\0\" \"1\" at hlc {h2:#x} (a second later): "
                      "CBOR [hlc, author, 0, true]", tomb),
        "envelope 2": ("Alice's seq 2: prev_hash = the envelope hash above; its payload's update (which "
                       "continues client 1's Yjs clock) sets the tombstone", env2.wire),
        "revival": (f"the same key at hlc {h3:#x}: [hlc, author, 0, false], the entity lives again",
                    revival),
        "conflict: tie": (f"Carol ({CAROL.id[:8]}..., client 3) writes status \"broken\" at the same hlc "
                          "as the register above; Alice's \"ok\" wins: hlcs equal, then device id text "
                          f"\"{ALICE.id[:4]}...\" > \"{CAROL.id[:4]}...\" (Carol's key bytes and client "
                          "id sort higher: they are not compared)", tie_carol),
        "conflict: later": ("Bob (client 2) writes status \"broken\" at hlc + 1: Bob wins, the hlc "
                            "decides before the device id", later_bob),
    }


def vectors() -> list[tuple[str, str, bytes]]:
    return [(name, what, data) for name, (what, data) in _build().items()]


def markdown() -> str:
    lines = ["| vector | what | bytes (hex) |", "| --- | --- | --- |"]
    for name, what, data in vectors():
        lines.append(f"| {name} | {what} | `{data.hex()}` |")
    return "\n".join(lines)


def envelope_hash_of(wire: bytes) -> bytes:
    return blake2b(wire, digest_size=32).digest()


if __name__ == "__main__":
    print(markdown())
