"""The fast path for small ACK frames (``messages.decode`` through ``cbor_limits.loads_plain``)
accepts exactly what the full path (``scan`` first) accepts, with the same value, and
refuses the rest with the full path's code and reason: compared on valid ACKs and on
ACKs damaged at random, with tags, simple values, floats, text, indefinite lengths, longer
heads than needed and trailing bytes put in."""

from __future__ import annotations

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.cbor_limits import loads_plain
from crdt_sync.protocol.messages import Ack, ProtocolViolation, decode, decode_full, encode

_ref = st.one_of(st.binary(min_size=32, max_size=32), st.integers(0, 2**16 - 1),
                 st.binary(min_size=0, max_size=40), st.integers(-5, 2**70))
_acks = st.builds(lambda space, batch, vv: [5, space, batch, [list(e) for e in vv]],
                  st.integers(0, 300), st.integers(0, 2**65),
                  st.lists(st.tuples(_ref, st.integers(-3, 2**64 + 3)), max_size=70))

#: CBOR put in place of an item: tags the decoder knows and some it does not, simple
#: values, floats, text, indefinite and over-long heads
_ODD = [bytes.fromhex(h) for h in (
    "c249010000000000000000", "c101", "c074323032362d31322d30345430303a30303a30305a",
    "d825500000000000000000000000000000000000", "d9d9f701", "d81801", "d9100001", "d86401",
    "c34100", "d81c01", "d81d00", "f0", "f7", "f6", "f5", "f4", "f93c00", "fa3f800000",
    "fb3ff0000000000000", "6161", "9f01ff", "5f4101ff", "1801", "190001", "1a00000001",
    "1b0000000000000001", "9800", "5800", "d90102820102", "a10101", "ff", "1c", "f818")]


def _same(frame: bytes) -> None:
    try:
        expected: object = decode_full(frame)
    except ProtocolViolation as exc:
        expected = (exc.code, str(exc))
    try:
        got: object = decode(frame)
    except ProtocolViolation as exc:
        got = (exc.code, str(exc))
    assert got == expected, frame.hex()


@settings(max_examples=300, deadline=None)
@given(_acks)
def test_any_ack_shaped_value_decodes_alike(items: list[object]) -> None:
    try:
        frame = cbor2.dumps(items, canonical=True)
    except (ValueError, OverflowError, cbor2.CBOREncodeError):
        return
    _same(frame)


@settings(max_examples=400, deadline=None)
@given(_acks, st.data())
def test_a_damaged_ack_is_refused_or_taken_alike(items: list[object], data: st.DataObject) -> None:
    try:
        frame = bytearray(cbor2.dumps(items, canonical=True))
    except (ValueError, OverflowError, cbor2.CBOREncodeError):
        return
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(2, max(2, len(frame))))
        how = data.draw(st.sampled_from(["odd", "flip", "cut", "append"]))
        if how == "odd":  # an item replaced (when `at` starts one) or inserted
            frame[at:at] = data.draw(st.sampled_from(_ODD))
        elif how == "flip" and at < len(frame):
            frame[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del frame[at:at + data.draw(st.integers(1, 4))]
        else:
            frame += data.draw(st.binary(min_size=1, max_size=3))
    _same(bytes(frame))


def test_every_odd_item_in_place_of_a_seq_is_refused_alike() -> None:
    key = bytes(range(32))
    good = encode(Ack(1, 7, [(key, 3), (0, 9)]))
    assert decode(good) == decode_full(good) == Ack(1, 7, [(key, 3), (0, 9)])
    assert loads_plain(good) is not None  # the fast path takes it
    seq = cbor2.dumps(9)
    at = good.rindex(seq)
    for odd in _ODD:
        _same(good[:at] + odd + good[at + len(seq):])
