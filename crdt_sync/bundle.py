"""Sneakernet bundles: a file of envelopes carried between devices (a USB stick).

Wire form (canonical CBOR)::

    ["crdt-sync-bundle", 3, body, signature]
    body = CBOR [exporter_key(32 B), space, exporter_version_vector, since_version_vector,
                 [envelope wire, ...], [fork proof, ...], snapshot wire / null]

The exporter signs ``body``; every envelope inside is verified again on import like any
received envelope, and every fork proof (:mod:`crdt_sync.forks`, at most
:data:`MAX_BUNDLE_PROOFS`) like any received proof, before the envelopes. Version 2 added
the proofs; version 3 the snapshot (:mod:`crdt_sync.snapshot`: null in a full-history
bundle; with one, the envelopes are the space's membership envelopes the snapshot covers and
the tail after it). Version 2 is still read (no snapshot); version 1 and versions above 3 are
refused as ``unknown-version``, saying which this build reads. The exporter's
version vector doubles as an acknowledgement: it tells the importer what the exporter
already has.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cbor2

from .errors import Rejected
from .identity import Identity, device_id, verify

MAGIC = "crdt-sync-bundle"
BUNDLE_VERSION = 3
#: Formats this build reads (2: without the snapshot field).
READS_VERSIONS = (2, 3)
#: Fork proofs one bundle may carry (each is checked on import).
MAX_BUNDLE_PROOFS = 1024
#: A bundle larger than this is refused before it is read into memory twice.
MAX_BUNDLE_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class Bundle:
    exporter: str
    space: str
    version_vector: dict[str, int]
    since: dict[str, int]
    envelopes: list[bytes]
    proofs: list[bytes] = field(default_factory=list)
    #: a snapshot (:mod:`crdt_sync.snapshot`) the envelopes are the tail of; None: full history
    snapshot: bytes | None = None


def encode_bundle(identity: Identity, space: str, vv: dict[str, int], since: dict[str, int],
                  envelopes: list[bytes], proofs: list[bytes] | None = None,
                  snapshot: bytes | None = None) -> bytes:
    body = cbor2.dumps([identity.public_key, space, vv, since, envelopes, proofs or [], snapshot],
                       canonical=True)
    return cbor2.dumps([MAGIC, BUNDLE_VERSION, body, identity.sign(body)], canonical=True)


def _vv(value: object) -> dict[str, int]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in value.items()):
        raise Rejected("malformed", "bundle version vector is not {author: seq}")
    return dict(value)


def decode_bundle(data: bytes) -> Bundle:
    """Check a bundle's framing and signature.

    Raises:
        Rejected: ``too-large``, ``malformed`` (not a bundle, truncated), ``unknown-version``,
            ``bad-signature``.
    """
    if len(data) > MAX_BUNDLE_BYTES:
        raise Rejected("too-large", f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    try:
        outer = cbor2.loads(data)
    except Exception as exc:  # trust boundary: truncation and garbage raise various types
        raise Rejected("malformed", f"not a crdt-sync bundle (truncated or corrupt): {exc}") from None
    if not (isinstance(outer, list) and len(outer) == 4 and outer[0] == MAGIC):
        raise Rejected("malformed", "not a crdt-sync bundle")
    _, version, body, signature = outer
    if version not in READS_VERSIONS:
        raise Rejected("unknown-version", f"bundle format {version!r}; this build reads formats "
                                          f"{READS_VERSIONS[0]}..{READS_VERSIONS[-1]}: upgrade crdt-sync "
                                          "to read a newer one")
    if not isinstance(body, bytes) or not isinstance(signature, bytes):
        raise Rejected("malformed", "bundle body or signature is not bytes")
    try:
        items = cbor2.loads(body)
        if version == 2:
            items = [*items, None]
        key, space, vv, since, envelopes, proofs, snapshot = items
    except Exception as exc:  # trust boundary
        raise Rejected("malformed", f"bundle body is corrupt: {exc}") from None
    if not (isinstance(key, bytes) and len(key) == 32 and isinstance(space, str)
            and (snapshot is None or isinstance(snapshot, bytes))
            and isinstance(envelopes, list) and all(isinstance(e, bytes) for e in envelopes)
            and isinstance(proofs, list) and len(proofs) <= MAX_BUNDLE_PROOFS
            and all(isinstance(p, bytes) for p in proofs)):
        raise Rejected("malformed", "bundle body has the wrong shape")
    if not verify(key, body, signature):
        raise Rejected("bad-signature", f"bundle signature of {device_id(key)} does not verify")
    return Bundle(device_id(key), space, _vv(vv), _vv(since), envelopes, proofs, snapshot)
