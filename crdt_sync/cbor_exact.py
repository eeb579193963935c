"""Decoding exactly one CBOR item: trailing bytes are refused, not ignored.

``cbor2.loads`` decodes the first item of its input and silently drops whatever follows it,
so two different byte strings (an envelope, a payload, a register) would decode to the same
thing. Every decode of untrusted bytes that must name exactly one item goes through here.

Protocol frames use :mod:`crdt_sync.cbor_limits` instead, which also bounds depth and item
count before decoding and refuses tags and non-canonical heads. Envelopes, payloads and
register values come here: they are already bounded by the envelope's size (512 KiB; cbor2
itself stops at 400 levels of nesting), and register values may hold the bignum tags that
cbor_limits refuses.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2


class TrailingBytes(ValueError):
    """Bytes follow the one CBOR item that was expected."""


def loads_exact(data: bytes) -> Any:
    """The one CBOR item that is all of ``data``.

    Raises:
        TrailingBytes: ``data`` holds more than one item.
        cbor2.CBORDecodeError (a ValueError) or another cbor2 error: ``data`` is not CBOR.
    """
    fp = io.BytesIO(data)
    item = cbor2.CBORDecoder(fp).decode()
    extra = len(data) - fp.tell()
    if extra:
        raise TrailingBytes(f"{extra} trailing byte{'s' if extra != 1 else ''} after the CBOR item")
    return item
