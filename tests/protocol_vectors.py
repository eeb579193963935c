"""Deterministic protocol test vectors: `python -m tests.protocol_vectors` prints the
Markdown section of docs/PROTOCOL.md; tests/test_protocol_vectors.py checks they agree."""

from __future__ import annotations

from hashlib import blake2b

from crdt_sync.envelope import seal
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.protocol.link import LINK_CONTEXT, nonce_of, public_of, seal_frame, shared_secret
from crdt_sync.protocol.messages import (
    MAX_VERSION,
    MIN_VERSION,
    Ack,
    Auth,
    Bye,
    ClockSkew,
    Envelopes,
    Error,
    ForkProof,
    Have,
    Hello,
    Ping,
    Quarantined,
    Spaces,
    WireEnvelope,
    encode,
)
from crdt_sync.protocol.session import AUTH_CONTEXT, TRANSCRIPT_CONTEXT

ALICE = Identity(bytes([1]) * 32)
BOB = Identity(bytes([2]) * 32)
NONCE_A = bytes([0xA0]) * 32
NONCE_B = bytes([0xB0]) * 32
#: The sessions' ephemeral X25519 secrets (random in real sessions).
EPHEMERAL_A = bytes([0xE1]) * 32
EPHEMERAL_B = bytes([0xE2]) * 32
HLC = 0x0193_0000_0000_0001  # any valid hybrid logical clock value


def _yjs_update() -> bytes:
    """A real Yjs v1 update: client 1 inserts "hi" into the root text "t\\0notes"."""
    from pycrdt import Doc, Text

    doc: Doc[Text] = Doc(client_id=1)
    doc.get("t\0notes", type=Text).insert(0, "hi")
    return doc.get_update()


def _handshake() -> tuple[bytes, bytes, bytes]:
    """Both HELLO frames and the transcript."""
    hello_a = encode(Hello(MIN_VERSION, MAX_VERSION, public_of(EPHEMERAL_A), NONCE_A, {}))
    hello_b = encode(Hello(MIN_VERSION, MAX_VERSION, public_of(EPHEMERAL_B), NONCE_B, {}))
    first, second = sorted([hello_a, hello_b])
    transcript = blake2b(TRANSCRIPT_CONTEXT + len(first).to_bytes(4, "big") + first + second,
                         digest_size=32).digest()
    return hello_a, hello_b, transcript


def link_vectors() -> list[tuple[str, bytes]]:
    """``(name, value)`` of each step of the link's key schedule, then one SEALED frame."""
    hello_a, hello_b, transcript = _handshake()
    dh = shared_secret(EPHEMERAL_A, public_of(EPHEMERAL_B))
    assert dh == shared_secret(EPHEMERAL_B, public_of(EPHEMERAL_A))
    k = blake2b(LINK_CONTEXT + transcript, key=dh, digest_size=64).digest()
    a_first = hello_a < hello_b
    a_sends = k[:32] if a_first else k[32:]
    b_sends = k[32:] if a_first else k[:32]
    auth = _auth(transcript)
    return [
        ("Alice's ephemeral secret", EPHEMERAL_A), ("Alice's ephemeral key", public_of(EPHEMERAL_A)),
        ("Bob's ephemeral secret", EPHEMERAL_B), ("Bob's ephemeral key", public_of(EPHEMERAL_B)),
        ("T (transcript of the two HELLOs above)", transcript), ("dh = X25519", dh),
        ("k = BLAKE2b-512(key=dh, \"crdt-sync/3 link\" || T)", k),
        (f"Alice sends with (her HELLO sorts {'first' if a_first else 'second'})", a_sends),
        ("Bob sends with", b_sends), ("nonce of counter 0", nonce_of(0)),
        ("SEALED: Alice's AUTH above, counter 0, under Alice's key", seal_frame(a_sends, 0, auth)),
        ("SEALED: Bob's PING 7, counter 1, under Bob's key", seal_frame(b_sends, 1, encode(Ping(7)))),
    ]


def _auth(transcript: bytes) -> bytes:
    return encode(Auth(ALICE.public_key, ALICE.sign(AUTH_CONTEXT + transcript + NONCE_B)))


def vectors() -> list[tuple[str, str, bytes]]:
    """``(name, explanation, frame)`` for every message type, as Alice would send them
    (every one but HELLO and SEALED travels inside a SEALED frame)."""
    hello_a, hello_b, transcript = _handshake()
    auth = _auth(transcript)
    blinded = blake2b(b"site-42", key=transcript, digest_size=16).digest()
    spaces = encode(Spaces([blinded]))
    have = encode(Have(0, [(ALICE.public_key, 1), (BOB.public_key, 3)], [bytes(32), b"\x33" * 32]))
    update = _yjs_update()
    payload = encode_payload([("equipment", "pump-7", pack_item(HLC, update))])
    env = seal(ALICE, "site-42", 2, bytes(32), HLC, payload)  # prev_hash: Alice's seq 1 hash
    envelopes = encode(Envelopes(0, 1, [WireEnvelope(0, env.seq, env.hlc, env.payload, env.signature)]))
    return [
        ("HELLO", "Alice, versions 3..4, her ephemeral key (of secret E1..), nonce A0.., no "
                  "capabilities", hello_a),
        ("HELLO (Bob)", "Bob's HELLO (ephemeral secret E2.., nonce B0..), used in the transcript", hello_b),
        ("AUTH", f"Alice's device key, and her signature of context + transcript {transcript.hex()} "
                 "+ Bob's nonce", auth),
        ("SPACES", "one blinded space id: BLAKE2b-128 of \"site-42\" keyed by the transcript", spaces),
        ("HAVE", "space 0: Alice has her seq 1, Bob's seq 3 (keys in full: they define the table), "
                 "with their head hashes 00.. and 33..", have),
        ("ENVELOPES", "space 0, batch 1: Alice's seq 2 (author by index 0 of her HAVE table)", envelopes),
        ("ACK", "space 0, batch 1: now holds Alice 2, Bob 3 (indices into the sender's table)",
         encode(Ack(0, 1, [(0, 2), (1, 3)]))),
        ("PING", "token 7", encode(Ping(7))),
        ("ERROR", "code 1 (malformed)", encode(Error(1, "frame is not CBOR"))),
        ("BYE", "code 0 (normal)", encode(Bye(0))),
        ("QUARANTINED", "space 0: Bob's chain (by index 1 of Alice's HAVE table) set aside from seq 4, "
         "bad-payload", encode(Quarantined(0, 1, 4, "bad-payload", "payload is malformed"))),
        ("FORK_PROOF", "space 0: Alice's seq 2 above, whole, for the peer to compare with its own",
         encode(ForkProof(0, [env.wire]))),
        ("CLOCK_SKEW", "space 0: Bob's seq 4 is held back, 2 days (172800000 ms) ahead (Bob by index 1)",
         encode(ClockSkew(0, 1, 4, 172_800_000))),
        ("SEALED", "Alice's AUTH above, her first frame after HELLO (counter 0), sealed under the "
                   "key of the link vectors", link_vectors()[10][1]),
    ]


def markdown() -> str:
    lines = ["| message | what | frame (hex) |", "| --- | --- | --- |"]
    for name, what, frame in vectors():
        lines.append(f"| {name} | {what} | `{frame.hex()}` |")
    lines += ["", "| link step | value (hex) |", "| --- | --- |"]
    for step, value in link_vectors():
        lines.append(f"| {step} | `{value.hex()}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
