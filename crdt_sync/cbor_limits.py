"""Bounds on one CBOR data item, checked on its bytes before anything is decoded.

A decoder builds an object per item: one megabyte of one-byte maps (``a0``) becomes a
million dictionaries, about 65 MiB. :func:`scan` walks the item's heads instead (a loop
over bytes with a small stack, no recursion, no objects) and refuses it before a decoder
sees it when it:

- nests arrays and maps deeper than ``max_depth`` (the outermost item is depth 1);
- holds more than ``max_items`` items in all (every element of an array, every key and
  every value of a map, counted from the counts the heads declare, so a head that
  declares too many is refused at once);
- declares a length or a count that the bytes left cannot hold (truncated);
- is followed by trailing bytes;
- uses an indefinite length, a head longer than needed (the canonical rules of RFC 8949
  §4.2.1), a tag, a simple value other than false, true, null and undefined, or a
  reserved head.

What :func:`scan` does not check itself is the order of map keys and the shortest form of
floats; it returns True when the item holds a map or a float, and the caller compares
the decoded value's canonical encoding with the bytes (:func:`is_canonical`). Items without
either are canonical once :func:`scan` accepts them. Text strings are checked for UTF-8 by
the decoder.

Used for every protocol frame (``crdt_sync.protocol.messages.decode``); envelopes,
payloads and bundles can use it the same way.
"""

from __future__ import annotations

from typing import Any

import cbor2

#: Deepest nesting of arrays and maps accepted by default.
MAX_DEPTH = 16
#: Most items in one data item by default (the largest protocol frame, 4,096 envelopes
#: of 6 items each, holds about 24,600).
MAX_ITEMS = 32_768


class CborLimitError(ValueError):
    """The bytes break a bound. ``over_limit`` is True for the depth and item limits (the
    item may be well formed, just too big), False for malformed or non-canonical bytes."""

    def __init__(self, message: str, over_limit: bool = False) -> None:
        super().__init__(message)
        self.over_limit = over_limit


def _refuse(message: str) -> CborLimitError:
    return CborLimitError(message)


# What each head byte (the first byte of an item) asks of the scanner.
_OK, _UINT, _STR, _STR_N, _ARRAY, _ARRAY_N, _MAP, _MAP_N, _FLOAT, _BAD = range(10)


def _head_table() -> tuple[bytes, list[int]]:
    """The action of each head byte, and its argument: the count or length it holds (the
    ``_STR``, ``_ARRAY``, ``_MAP`` actions), or how many bytes follow with it (``_N``, ``_UINT``,
    ``_FLOAT``)."""
    actions, args = bytearray(), []
    for head in range(256):
        major, info = head >> 5, head & 0x1F
        follow = 1 << (info - 24) if 24 <= info < 28 else 0
        if major == 6 or info >= 28 or (major == 7 and not (20 <= info < 24 or 25 <= info < 28)):
            action, arg = _BAD, 0  # tags, indefinite lengths, reserved, other simple values
        elif major == 7:
            action, arg = (_FLOAT, follow) if follow else (_OK, 0)
        elif major < 2:
            action, arg = (_UINT, follow) if follow else (_OK, 0)
        else:
            small, longer = {2: (_STR, _STR_N), 3: (_STR, _STR_N), 4: (_ARRAY, _ARRAY_N),
                             5: (_MAP, _MAP_N)}[major]
            action, arg = (longer, follow) if follow else (small, info)
        actions.append(action)
        args.append(arg)
    return bytes(actions), args


_ACTIONS, _ARGS = _head_table()
#: The smallest value a head with this many following bytes may carry (else it is longer
#: than needed: not canonical).
_SHORTEST = {1: 24, 2: 1 << 8, 4: 1 << 16, 8: 1 << 32}


def scan(data: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> bool:
    """Check ``data`` as exactly one CBOR data item within the bounds (see the module).

    Returns:
        True when the item holds a map or a float: its canonical form is then for the
        caller to check (:func:`is_canonical`).

    Raises:
        CborLimitError: the first bound broken, with its position.
    """
    end = len(data)
    pos = 0
    items = 1
    left = 1  # items still to read in the innermost open array or map (the root: one)
    stack: list[int] = []  # the `left` of each enclosing one
    special = False
    actions, args, shortest = _ACTIONS, _ARGS, _SHORTEST
    try:
        while True:
            while left:
                left -= 1
                head = data[pos]  # past the end: IndexError, i.e. truncated
                pos += 1
                action = actions[head]
                if action == _OK:
                    continue
                if action == _STR:
                    pos += args[head]
                    continue
                if action in (_STR_N, _UINT, _ARRAY_N, _MAP_N):
                    size = args[head]
                    if pos + size > end:
                        raise _refuse(f"CBOR head truncated at byte {pos - 1}")
                    n = data[pos] if size == 1 else int.from_bytes(data[pos:pos + size], "big")
                    pos += size
                    if n < shortest[size]:
                        raise _refuse(f"non-canonical CBOR: a longer head than needed at byte "
                                      f"{pos - 1 - size}")
                    if action == _UINT:
                        continue
                    if action == _STR_N:
                        if n > end - pos:
                            raise _refuse(f"CBOR string of {n} bytes at byte {pos} runs past the end")
                        pos += n
                        continue
                elif action in (_ARRAY, _MAP):
                    n = args[head]
                elif action == _FLOAT:
                    pos += args[head]
                    special = True  # its shortest form is checked by re-encoding
                    continue
                else:
                    raise _refuse(_bad_head(head, pos - 1))
                # an array or a map of n entries
                if action >= _MAP:
                    n *= 2
                    special = True  # its key order is checked by re-encoding
                if len(stack) >= max_depth:
                    raise CborLimitError(f"CBOR nested deeper than {max_depth} at byte {pos - 1}", True)
                if n > end - pos:
                    raise _refuse(f"CBOR array or map of {n} items at byte {pos} runs past the end")
                items += n
                if items > max_items:
                    raise CborLimitError(f"CBOR item holds more than {max_items} items", True)
                if n:
                    stack.append(left)
                    left = n
            if not stack:
                break
            left = stack.pop()
    except IndexError:
        raise _refuse(f"CBOR item truncated at byte {min(pos, end)}") from None
    if pos != end:
        if pos > end:
            raise _refuse(f"CBOR string runs past the end ({pos - end} bytes missing)")
        raise _refuse(f"{end - pos} trailing bytes after the CBOR item at byte {pos}")
    return special


def _bad_head(head: int, at: int) -> str:
    major, info = head >> 5, head & 0x1F
    if info == 31:
        return f"non-canonical CBOR: indefinite length or break at byte {at}"
    if info >= 28:
        return f"malformed CBOR: reserved head {head:#04x} at byte {at}"
    if major == 6:
        return f"CBOR tag at byte {at} (tags are not used)"
    return f"CBOR simple value at byte {at} (only false, true, null and undefined are used)"


def is_canonical(value: Any, data: bytes) -> bool:
    """Whether ``data`` is the canonical encoding of ``value`` (decoded from it)."""
    return bool(cbor2.dumps(value, canonical=True) == data)


def _no_tags(tag: cbor2.CBORTag, _immutable: bool) -> Any:
    raise ValueError(f"CBOR tag {tag.tag}")


def loads_plain(data: bytes, max_depth: int = MAX_DEPTH) -> Any | None:
    """A fast check of a *small* item by the C decoder and encoder alone, without :func:`scan`:
    the decoded value when ``data`` is exactly its canonical encoding (so: no trailing bytes,
    no indefinite length, no longer head than needed), nested at most ``max_depth`` deep,
    with no tag the decoder does not know. None: anything else (the caller then takes the
    full path, :func:`scan` and its reasons).

    It is not :func:`scan`: a tag the decoder knows (a date, a big integer) or a simple value
    can still come out as a Python object that encodes back to the same bytes. A caller may
    use the value only if it accepts nothing but plain types (``int`` below 2**64, ``bytes``,
    ``list``), which none of those objects is; and only for items small enough that their
    item count needs no bound (each item takes at least one byte).
    """
    try:
        value = cbor2.loads(data, max_depth=max_depth, allow_indefinite=False, tag_hook=_no_tags)
        return value if cbor2.dumps(value, canonical=True) == data else None
    except Exception:  # trust boundary: cbor2 raises several types on garbage
        return None


def loads(data: bytes, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS) -> Any:
    """Decode ``data`` as one canonical CBOR item within the bounds.

    Raises:
        CborLimitError: a bound is broken, or the item is not canonical CBOR.
        ValueError: the decoder refused it (for instance a text string that is not UTF-8).
    """
    special = scan(data, max_depth, max_items)
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # trust boundary: cbor2 raises several types on garbage
        raise ValueError(f"not CBOR: {exc}") from None
    if special and not is_canonical(value, data):
        raise _refuse("non-canonical CBOR (map key order, duplicate keys or float width)")
    return value


__all__ = ["MAX_DEPTH", "MAX_ITEMS", "CborLimitError", "is_canonical", "loads", "loads_plain", "scan"]
