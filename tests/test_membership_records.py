"""Membership records, the kind-4 payload and invite tokens: what is made decodes to the same
record, and every malformed, oversized, non-canonical or forged byte string is refused with
``bad-record`` (``bad-token`` / ``expired-token`` for tokens) and a detail that names it."""

from __future__ import annotations

import base64
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import Rejected
from crdt_sync.membership import (
    MAX_RECORDS,
    Genesis,
    Grant,
    Invite,
    Keys,
    Kind,
    Redeem,
    Revoke,
    Rights,
    decode_membership,
    decode_record,
    decode_token,
    encode_membership,
    encode_token,
    is_membership,
    is_space_id,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_redeem,
    make_revoke,
    scope_digest,
    space_id_of,
)
from crdt_sync.membership.records import SIGNING_PREFIX
from tests.membership_helpers import ADMIN, BOB, CAROL, DAY_MS, WALL_MS, hlc, key

GENESIS = make_genesis(ADMIN, hlc(0), nonce=bytes(16))
SPACE = space_id_of(GENESIS)
SCOPE = sorted([scope_digest(bytes(32), "equipment"), scope_digest(bytes(32), "notes")])


def every_kind() -> list[Any]:
    invite_key = key(9)
    invite = make_invite(ADMIN, SPACE, invite_key.public_key, Rights.WRITE, SCOPE, WALL_MS + DAY_MS, 0, True,
                         hlc(10), GENESIS.hash)
    return [
        GENESIS,
        make_grant(ADMIN, SPACE, BOB.public_key, Rights.READ, SCOPE, WALL_MS + DAY_MS, hlc(10), GENESIS.hash),
        make_revoke(ADMIN, SPACE, BOB.public_key, 7, hlc(20), GENESIS.hash),
        invite,
        make_redeem(invite_key, SPACE, CAROL.public_key, hlc(30), invite.hash),
        make_keys(ADMIN, SPACE, 1, bytes(range(16)), [(CAROL.public_key, b"x" * 117), (BOB.public_key, b"y")],
                  hlc(40), GENESIS.hash),
    ]


def sign(identity: Any, body: list[Any]) -> bytes:
    signature = identity.sign(SIGNING_PREFIX + cbor2.dumps(body, canonical=True))
    return cbor2.dumps([*body, signature], canonical=True)


def refused(wire: Any, needle: str) -> None:
    with pytest.raises(Rejected) as info:
        decode_record(wire)
    assert info.value.reason == "bad-record"
    assert needle in info.value.detail, info.value.detail


def grant_body(**change: Any) -> list[Any]:
    fields = {"space": SPACE, "issuer": ADMIN.public_key, "subject": BOB.public_key, "rights": 2,
              "scope": [], "not_after": 0, "hlc": hlc(1), "proof": GENESIS.hash}
    fields.update(change)
    return [1, 1, *fields.values()]


# -- the round trip ------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(6))
def test_every_kind_decodes_to_the_record_made(index: int) -> None:
    record = every_kind()[index]
    assert decode_record(record.wire) == record
    assert index == record.KIND and cbor2.loads(record.wire)[:2] == [1, index]
    assert record.hash == __import__("hashlib").blake2b(record.wire, digest_size=32).digest()


def test_the_kinds_and_their_fields() -> None:
    genesis, grant, revoke, invite, redeem, keys = every_kind()
    assert isinstance(genesis, Genesis) and genesis.issuer == genesis.creator == ADMIN.public_key
    assert isinstance(grant, Grant) and grant.scope == tuple(SCOPE) and grant.rights is Rights.READ
    assert isinstance(revoke, Revoke) and revoke.after_seq == 7
    assert isinstance(invite, Invite) and invite.history is True and invite.not_after_ms == WALL_MS + DAY_MS
    assert isinstance(redeem, Redeem) and redeem.issuer == redeem.invite_key == invite.invite_key
    assert isinstance(keys, Keys)
    assert [k for k, _s in keys.boxes] == sorted([BOB.public_key, CAROL.public_key])
    assert keys.box_for(BOB.public_key) == b"y" and keys.box_for(ADMIN.public_key) is None
    assert list(Kind) == [Kind.GENESIS, Kind.GRANT, Kind.REVOKE, Kind.INVITE, Kind.REDEEM, Kind.KEYS]


def test_space_ids() -> None:
    assert len(SPACE) == 33 and SPACE[0] == "s" and is_space_id(SPACE)
    other = make_genesis(ADMIN, hlc(0))  # a random nonce: another space, though the creator is the same
    assert space_id_of(other) != SPACE
    assert not is_space_id("site-42") and not is_space_id(SPACE.upper()) and not is_space_id(SPACE[:-1])


def test_scope_digests_are_keyed() -> None:
    assert scope_digest(bytes(32), "notes") != scope_digest(bytes([1]) * 32, "notes")
    assert len(scope_digest(bytes(32), "notes")) == 16


# -- refusals ------------------------------------------------------------------------------------
def test_a_bad_signature_is_refused() -> None:
    wire = bytearray(every_kind()[1].wire)
    wire[-1] ^= 1
    refused(bytes(wire), "signature does not verify")


def test_a_record_signed_by_another_key_than_its_issuer_is_refused() -> None:
    refused(sign(BOB, grant_body()), "signature does not verify")


def test_a_signature_without_the_prefix_is_refused() -> None:
    body = grant_body()
    wire = cbor2.dumps([*body, ADMIN.sign(cbor2.dumps(body, canonical=True))], canonical=True)
    refused(wire, "signature does not verify")


@pytest.mark.parametrize(("change", "needle"), [
    ({"space": "site-42"}, "space id"),
    ({"space": 5}, "space id"),
    ({"issuer": b"k" * 31}, "32-byte key"),
    ({"subject": "bob"}, "32-byte key"),
    ({"rights": 0}, "rights"),
    ({"rights": 4}, "rights"),
    ({"rights": True}, "rights"),
    ({"scope": [b"a" * 16, b"a" * 16]}, "sorted and unique"),
    ({"scope": [b"b" * 16, b"a" * 16]}, "sorted and unique"),
    ({"scope": [b"a" * 15]}, "16-byte digest"),
    ({"scope": [bytes([i]) * 16 for i in range(65)]}, "at most 64"),
    ({"scope": b""}, "scope"),
    ({"not_after": -1}, "not_after_ms"),
    ({"not_after": 1 << 46}, "not_after_ms"),
    ({"hlc": 1 << 62}, "hlc"),
    ({"hlc": 1.5}, "hlc"),
    ({"proof": b""}, "proof"),
])
def test_out_of_range_fields_are_refused(change: dict[str, Any], needle: str) -> None:
    refused(sign(ADMIN, grant_body(**change)), needle)


def test_shape_refusals() -> None:
    refused(b"\xff", "canonical CBOR")
    refused(b"", "canonical CBOR")
    refused(cbor2.dumps({"a": 1}), "array")
    refused(sign(ADMIN, [2, 1, *grant_body()[2:]]), "record format 2")
    refused(sign(ADMIN, [1, 9, *grant_body()[2:]]), "unknown record kind")
    refused(sign(ADMIN, [1, True, *grant_body()[2:]]), "unknown record kind")
    refused(sign(ADMIN, grant_body()[:-1]), "11 items")
    refused(cbor2.dumps([*grant_body(), b"s" * 63], canonical=True), "signature is not 64")
    refused("not bytes", "byte string")


def test_non_canonical_and_trailing_bytes_are_refused() -> None:
    wire = sign(ADMIN, grant_body())
    assert decode_record(wire).rights is Rights.WRITE
    refused(wire + b"\x00", "trailing")
    # the same array with its rights (2) written in a longer head than needed
    long_head = wire.replace(b"\x02\x80", b"\x18\x02\x80", 1)
    assert long_head != wire
    refused(long_head, "canonical")
    refused(b"\x9f" + wire[1:] + b"\xff", "canonical")  # indefinite length


def test_tags_are_refused() -> None:
    refused(cbor2.dumps(cbor2.CBORTag(1, grant_body())), "tag")


def test_an_oversized_record_is_refused_before_decoding() -> None:
    refused(b"\x00" * (64 * 1024 + 1), "exceeds 65536")


def test_an_invite_may_live_at_most_30_days() -> None:
    ok = make_invite(ADMIN, SPACE, key(9).public_key, 2, [], WALL_MS + 30 * DAY_MS, 0, False, hlc(0),
                     GENESIS.hash)
    assert ok.not_after_ms - (ok.hlc >> 16) == 30 * DAY_MS
    with pytest.raises(ValueError, match="30 days"):
        make_invite(ADMIN, SPACE, key(9).public_key, 2, [], WALL_MS + 30 * DAY_MS + 1, 0, False, hlc(0),
                    GENESIS.hash)
    with pytest.raises(ValueError, match="after its hlc"):
        make_invite(ADMIN, SPACE, key(9).public_key, 2, [], WALL_MS, 0, False, hlc(0), GENESIS.hash)
    body = [1, 3, SPACE, ADMIN.public_key, key(9).public_key, 2, [], WALL_MS + DAY_MS, 0, 1, hlc(0),
            GENESIS.hash]
    refused(sign(ADMIN, body), "true or false")  # history is a CBOR bool, not 1


def test_keys_boxes_are_bounded_sorted_and_unique() -> None:
    good = [list(b) for b in every_kind()[5].boxes]
    body = [1, 5, SPACE, ADMIN.public_key, 1, bytes(16), good[::-1], hlc(0), GENESIS.hash]
    refused(sign(ADMIN, body), "sorted by recipient key")
    body[6] = [[BOB.public_key, b""]]
    refused(sign(ADMIN, body), "sealed")
    body[6] = [[BOB.public_key, b"x" * 1025]]
    refused(sign(ADMIN, body), "sealed")
    with pytest.raises(ValueError, match="two boxes"):
        make_keys(ADMIN, SPACE, 1, bytes(16), [(BOB.public_key, b"a"), (BOB.public_key, b"b")], hlc(0),
                  GENESIS.hash)
    with pytest.raises(ValueError, match="exceeds 65536"):  # the record bound caps a keys record
        make_keys(ADMIN, SPACE, 1, bytes(16), [(bytes([i, j]) * 16, b"x" * 117) for i in range(4)
                                               for j in range(120)], hlc(0), GENESIS.hash)


# -- the membership payload ----------------------------------------------------------------------
def test_membership_payload_round_trip() -> None:
    records = every_kind()
    payload = encode_membership(records)
    assert cbor2.loads(payload) == [4, [r.wire for r in records]]
    assert is_membership(payload) and decode_membership(payload) == records
    assert not is_membership(cbor2.dumps([2, []])) and not is_membership(cbor2.dumps([3, b"", b"", b""]))
    assert not is_membership(b"")


def test_membership_payload_refusals() -> None:
    def bad(payload: bytes, needle: str) -> None:
        with pytest.raises(Rejected) as info:
            decode_membership(payload)
        assert info.value.reason == "bad-record" and needle in info.value.detail, info.value.detail

    wire = every_kind()[1].wire
    bad(cbor2.dumps([2, [wire]]), "not a membership payload")
    bad(cbor2.dumps([4, []]), "1 to 64")
    bad(cbor2.dumps([4, [wire] * (MAX_RECORDS + 1)]), "at most 64")
    bad(cbor2.dumps([4, [wire, b"\x00"]]), "record 1")
    bad(cbor2.dumps([4, [wire]]) + b"\x00", "trailing")
    bad(cbor2.dumps([4, wire]), "[4, [record, ...]]")
    bad(cbor2.dumps([4, [[wire]]]), "nested deeper")
    with pytest.raises(ValueError):
        encode_membership([])


# -- tokens --------------------------------------------------------------------------------------
def make_token(**change: Any) -> str:
    invite_key = key(9)
    invite = make_invite(ADMIN, SPACE, invite_key.public_key, Rights.WRITE, [], WALL_MS + 7 * DAY_MS, 0, True,
                         hlc(0), GENESIS.hash)
    parts: dict[str, Any] = {"genesis": GENESIS, "invite": invite, "invite_seed": invite_key.seed,
                             "keys": [(0, bytes(16), bytes(32)), (1, bytes([1]) * 16, bytes([1]) * 32)],
                             "secret": bytes([7]) * 32, "label": b"sealed name"}
    parts.update(change)
    return encode_token(**parts)


def raw_token(items: list[Any]) -> str:
    return "cs1" + base64.urlsafe_b64encode(cbor2.dumps(items, canonical=True)).decode().rstrip("=")


def test_token_round_trip() -> None:
    text = make_token()
    assert text.startswith("cs1") and "=" not in text and "+" not in text and "/" not in text
    token = decode_token(text, now_ms=WALL_MS)
    assert token.genesis == GENESIS and token.space == SPACE
    assert token.invite_identity().public_key == token.invite.invite_key
    assert token.keys == ((0, bytes(16), bytes(32)), (1, bytes([1]) * 16, bytes([1]) * 32))
    assert token.secret == bytes([7]) * 32 and token.label == b"sealed name"
    wrapped = "\n".join(text[i:i + 40] for i in range(0, len(text), 40))
    assert decode_token("  " + wrapped + "\n") == token


def test_an_expired_token_says_so() -> None:
    text = make_token()
    with pytest.raises(Rejected) as info:
        decode_token(text, now_ms=WALL_MS + 7 * DAY_MS)
    assert info.value.reason == "expired-token"
    assert "expired at 2026-01-08T00:00:00.000Z" in info.value.detail and "new one" in info.value.detail


@pytest.mark.parametrize(("text", "needle"), [
    ("cs2abc", "not a crdt-sync invite token"),
    ("hello", "not a crdt-sync invite token"),
    ("cs1***", "base64url"),
    ("cs1" + "A" * 5, "base64url"),
    ("cs1" + "A" * (200 * 1024), "at most"),
    ("cs1" + base64.urlsafe_b64encode(b"\xff\xff").decode().rstrip("="), "damaged"),
])
def test_malformed_tokens_say_what_is_wrong(text: str, needle: str) -> None:
    with pytest.raises(Rejected) as info:
        decode_token(text)
    assert info.value.reason == "bad-token" and needle in info.value.detail, info.value.detail
    assert "ask for a new one" in info.value.detail


def test_a_token_whose_parts_do_not_fit_is_refused() -> None:
    good = decode_token(make_token())
    base = [1, GENESIS.wire, good.invite.wire, good.invite_seed, [], bytes(32), b""]

    def bad(index: int, value: Any, needle: str) -> None:
        items = list(base)
        items[index] = value
        with pytest.raises(Rejected) as info:
            decode_token(raw_token(items))
        assert needle in info.value.detail, info.value.detail

    bad(0, 2, "token format 2")
    bad(1, good.invite.wire, "genesis and an invite")
    bad(1, make_genesis(ADMIN, hlc(0), nonce=bytes([1]) * 16).wire, "another space")
    bad(2, good.invite.wire[:-1] + bytes([good.invite.wire[-1] ^ 1]), "does not verify")
    bad(3, key(8).seed, "invite key does not match")
    bad(4, [[1, bytes(16), bytes(32)], [0, bytes(16), bytes(32)]], "sorted")
    bad(4, [[0, bytes(15), bytes(32)]], "epoch_id")
    bad(5, bytes(31), "secret")
    bad(6, b"x" * 1025, "label")
    with pytest.raises(Rejected):
        decode_token(raw_token(base[:6]))


def test_a_token_builds_its_redemption() -> None:
    token = decode_token(make_token())
    invite, redeem = token.redemption(CAROL.public_key, hlc(5))
    assert invite == token.invite and isinstance(redeem, Redeem)
    assert (redeem.invite_key, redeem.subject, redeem.proof, redeem.space) == \
        (token.invite.invite_key, CAROL.public_key, token.invite.hash, SPACE)


def test_an_invite_without_history_carries_one_key() -> None:
    invite = make_invite(ADMIN, SPACE, key(9).public_key, Rights.WRITE, [], WALL_MS + DAY_MS, 0, False,
                         hlc(0), GENESIS.hash)
    with pytest.raises(ValueError, match="only the current epoch"):
        make_token(invite=invite)
    assert decode_token(make_token(invite=invite, keys=[(1, bytes(16), bytes(32))])).keys[0][0] == 1


# -- hostile input costs a bound -----------------------------------------------------------------
def test_deep_or_huge_input_is_refused_by_its_bounds() -> None:
    refused(b"\x81" * 60_000 + b"\x00", "nested deeper")
    refused(b"\x9a\xff\xff\xff\xff", "canonical CBOR")  # an array head declaring 4 billion items
    with pytest.raises(Rejected, match="too large"):
        decode_membership(b"\x82\x04" + b"\x00" * (5 * 1024 * 1024))
    with pytest.raises(Rejected, match=r"nested deeper|at most"):
        decode_token("cs1" + base64.urlsafe_b64encode(b"\x81" * 3000 + b"\x00").decode().rstrip("="))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_is_refused_with_a_reason_never_a_crash(data: bytes) -> None:
    for decode in (decode_record, decode_membership):
        try:
            decode(data)
        except Rejected as exc:
            assert exc.reason == "bad-record"
    try:
        decode_token("cs1" + base64.urlsafe_b64encode(data).decode().rstrip("="))
    except Rejected as exc:
        assert exc.reason == "bad-token"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.integers(0, 255))
def test_a_flipped_byte_of_a_record_is_refused_or_is_the_same_record(at: int, value: int) -> None:
    for record in every_kind():
        wire = bytearray(record.wire)
        if at >= len(wire):
            continue
        wire[at] = value
        try:
            again = decode_record(bytes(wire))
        except Rejected as exc:
            assert exc.reason == "bad-record"
        else:
            assert again.wire == record.wire  # only the unchanged byte string decodes
