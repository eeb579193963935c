"""crdt_sync.cbor_limits: bounds checked on the bytes, before anything is decoded.

The finding it answers (issue 11, 4): one ~1 MB frame of tiny CBOR maps decodes to 60+ MiB
of Python objects. The scanner refuses such input while allocating next to nothing, and
accepts every canonical item within its bounds exactly as cbor2 decodes it.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.cbor_limits import MAX_DEPTH, MAX_ITEMS, CborLimitError, loads, scan

MiB = 1024 * 1024


def tiny_maps(n: int) -> bytes:
    """An array of ``n`` empty maps: one byte each on the wire, ~64 bytes each decoded."""
    return b"\x9a" + n.to_bytes(4, "big") + b"\xa0" * n


def peak_while(call: Any) -> int:
    tracemalloc.start()
    with contextlib.suppress(CborLimitError, ValueError):
        call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_a_megabyte_of_tiny_maps_is_refused_before_it_is_built() -> None:
    data = tiny_maps(1_000_000)
    decoded = peak_while(lambda: cbor2.loads(data))
    assert decoded > 50 * MiB  # the finding: what a plain decode costs
    with pytest.raises(CborLimitError, match="more than 32768 items") as refused:
        scan(data)
    assert refused.value.over_limit
    assert peak_while(lambda: scan(data)) < 64 * 1024
    assert peak_while(lambda: loads(data)) < 64 * 1024


@pytest.mark.parametrize(("data", "match"), [
    (b"\x81" * (MAX_DEPTH + 1) + b"\x00", f"deeper than {MAX_DEPTH}"),
    (b"\x81" * MAX_DEPTH + b"\x80", f"deeper than {MAX_DEPTH}"),  # an empty array counts too
    (b"\xa1\x00" * (MAX_DEPTH + 1) + b"\x00", f"deeper than {MAX_DEPTH}"),
    (b"\x9b" + (2**40).to_bytes(8, "big"), "runs past the end"),  # declared, not there
    (b"\x99" + (MAX_ITEMS).to_bytes(2, "big") + b"\x00" * MAX_ITEMS, f"more than {MAX_ITEMS}"),
], ids=["deep-arrays", "deep-empty", "deep-maps", "huge-count", "items"])
def test_depth_and_item_limits(data: bytes, match: str) -> None:
    with pytest.raises(CborLimitError, match=match):
        scan(data)


def test_items_up_to_the_limits_are_accepted() -> None:
    assert scan(b"\x81" * (MAX_DEPTH - 1) + b"\x80") is False
    fits = b"\x99" + (MAX_ITEMS - 1).to_bytes(2, "big") + b"\x00" * (MAX_ITEMS - 1)
    assert scan(fits) is False and loads(fits) == [0] * (MAX_ITEMS - 1)
    assert scan(b"\x82\x01\x02", max_items=3) is False
    with pytest.raises(CborLimitError):
        scan(b"\x82\x01\x02", max_items=2)


@pytest.mark.parametrize(("data", "match"), [
    (b"\x01\x00", "1 trailing bytes"),
    (b"\x82\x01\x02\xff", "1 trailing bytes"),
    (b"", "truncated"),
    (b"\x82\x01", "runs past the end"),
    (b"\x83\x01\x02", "runs past the end"),
    (b"\x82\x19\x01", "truncated"),
    (b"\x58\x20abc", "runs past the end"),
    (b"\x43ab", "runs past the end"),
    (b"\x18\x05", "longer head than needed"),  # 5 fits in the head byte
    (b"\x19\x00\xff", "longer head than needed"),
    (b"\x1a\x00\x00\xff\xff", "longer head than needed"),
    (b"\x1b\x00\x00\x00\x00\xff\xff\xff\xff", "longer head than needed"),
    (b"\x98\x01\x00", "longer head than needed"),  # an array of one, counted in a longer head
    (b"\x9f\x01\xff", "indefinite"),
    (b"\x5f\x41a\xff", "indefinite"),
    (b"\xff", "indefinite length or break"),
    (b"\xc1\x00", "tags are not used"),
    (b"\xd8\x1d\x00", "tags are not used"),  # value sharing (tag 29): refused, never expanded
    (b"\xe0", "simple value"),
    (b"\xf8\x20", "simple value"),
    (b"\x1c", "reserved"),
], ids=lambda v: v.hex() if isinstance(v, bytes) else None)
def test_malformed_or_non_canonical_bytes_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(CborLimitError, match=match) as refused:
        scan(data)
    assert not refused.value.over_limit


@pytest.mark.parametrize(("value", "bad"), [
    ({"a": 1, "b": 2}, b"\xa2\x61b\x02\x61a\x01"),  # keys out of order
    ({"a": 2}, b"\xa2\x61a\x01\x61a\x02"),  # a repeated key
    (1.0, b"\xfb" + (0x3FF0000000000000).to_bytes(8, "big")),  # 1.0 fits in a half float
])
def test_maps_and_floats_are_compared_with_their_canonical_encoding(value: Any, bad: bytes) -> None:
    good = cbor2.dumps(value, canonical=True)
    assert scan(good) is True and loads(good) == value  # True: the caller re-encodes
    assert scan(bad) is True
    with pytest.raises(CborLimitError, match="non-canonical"):
        loads(bad)


def test_text_that_is_not_utf8_is_left_to_the_decoder() -> None:
    assert scan(b"\x62\xff\xfe") is False
    with pytest.raises(ValueError, match="not CBOR"):
        loads(b"\x62\xff\xfe")


# -- property: exactly the canonical items within bounds ----------------------------------------
leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1)
          | st.floats(allow_nan=False) | st.binary(max_size=40) | st.text(max_size=8))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_canonical_item_is_accepted_as_cbor2_decodes_it(value: Any) -> None:
    data = cbor2.dumps(value, canonical=True)
    assert loads(data) == cbor2.loads(data)
    with pytest.raises(CborLimitError, match="trailing"):
        scan(data + b"\x00")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_accepted_or_refused_never_crash(data: bytes) -> None:
    try:
        value = loads(data)
    except (CborLimitError, ValueError):
        return
    assert cbor2.dumps(value, canonical=True) == data  # what is accepted is canonical
