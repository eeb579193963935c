"""docs/DESIGN.md's membership vectors are what the code makes, and each means what its row
says: every vector in the document is read back by the decoders and judged by a log, and a
vector added to the document without a check here fails."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from hashlib import blake2b
from pathlib import Path

import cbor2
import pytest

from crdt_sync.identity import verify
from crdt_sync.membership import (
    Carrier,
    Genesis,
    Grant,
    Invite,
    MembershipLog,
    Redeem,
    Rights,
    decode_membership,
    decode_record,
    decode_token,
    scope_digest,
    space_id_of,
)
from tests import membership_vectors as mv

DOC = Path(__file__).resolve().parent.parent / "docs" / "DESIGN.md"
ROW = re.compile(r"^\| (?P<name>[^|]+?) \| (?P<what>.+) \| `(?P<hex>[0-9a-f]+)` \|$")


def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    block = text.split("<!-- membership-vectors:begin -->")[1].split("<!-- membership-vectors:end -->")[0]
    block = block.strip()
    assert block == mv.markdown(), "regenerate with: python -m tests.membership_vectors"
    out: dict[str, bytes] = {}
    for line in block.splitlines()[2:]:
        match = ROW.match(line)
        assert match, f"not a vector row: {line[:80]}"
        out[match["name"]] = bytes.fromhex(match["hex"])
    return out


V = doc_vectors()


def genesis() -> Genesis:
    record = decode_record(V["genesis"])
    assert isinstance(record, Genesis)
    return record


def check_signature_input(data: bytes) -> None:
    assert data.startswith(b"crdt-sync/1 record")
    assert cbor2.loads(data[len(b"crdt-sync/1 record"):]) == [1, 0, mv.ALICE.public_key, mv.NONCE, mv.H]
    assert verify(mv.ALICE.public_key, data, genesis().signature)


def check_genesis(data: bytes) -> None:
    record = genesis()
    assert (record.creator, record.nonce, record.hlc) == (mv.ALICE.public_key, mv.NONCE, mv.H)
    assert cbor2.loads(data)[:5] == [1, 0, mv.ALICE.public_key, mv.NONCE, mv.H]


def check_genesis_hash(data: bytes) -> None:
    assert data == blake2b(V["genesis"], digest_size=32).digest() == genesis().hash


def check_space_id(data: bytes) -> None:
    space = data.decode("ascii")
    digest = blake2b(V["genesis"], digest_size=20).digest()
    assert space == "s" + base64.b32encode(digest).decode().rstrip("=").lower() == space_id_of(genesis())
    assert len(space) == 33


def check_scope_digest(data: bytes) -> None:
    assert data == blake2b(b"notes", key=mv.SCOPE_KEY, digest_size=16).digest() == \
        scope_digest(mv.SCOPE_KEY, "notes")


def _log() -> MembershipLog:
    log = MembershipLog(V["space id"].decode())
    log.add([genesis()], Carrier(mv.ALICE.public_key, 1, mv.H))
    return log


def check_grant(data: bytes) -> None:
    grant = decode_record(data)
    assert isinstance(grant, Grant)
    assert (grant.issuer, grant.subject, grant.rights, grant.scope, grant.proof) == \
        (mv.ALICE.public_key, mv.BOB.public_key, Rights.WRITE, (V["scope digest"],), V["genesis hash"])
    assert grant.not_after_ms == 1_769_817_600_000 and grant.hlc == mv.H + (1000 << 16)
    log = _log()
    assert log.check([grant], Carrier(mv.ALICE.public_key, 2, grant.hlc)).ok
    log.add([grant], Carrier(mv.ALICE.public_key, 2, grant.hlc))
    assert log.authorize(mv.BOB.public_key, 1, grant.hlc, [V["scope digest"]]).ok
    assert log.authorize(mv.BOB.public_key, 1, grant.hlc, [bytes(16)]).reason == "out-of-scope"
    assert log.authorize(mv.BOB.public_key, 1, grant.not_after_ms << 16, None).reason == "expired"


def check_invite(data: bytes) -> None:
    invite = decode_record(data)
    assert isinstance(invite, Invite)
    assert (invite.issuer, invite.invite_key, invite.rights, invite.scope, invite.history) == \
        (mv.ALICE.public_key, mv.INVITE_KEY.public_key, Rights.READ, (), True)
    assert (invite.not_after_ms, invite.grant_not_after_ms) == (mv.WALL_MS + 7 * mv.DAY_MS, 0)


def check_redeem(data: bytes) -> None:
    redeem = decode_record(data)
    assert isinstance(redeem, Redeem)
    assert (redeem.invite_key, redeem.subject, redeem.proof) == \
        (mv.INVITE_KEY.public_key, mv.BOB.public_key, decode_record(V["invite"]).hash)


def check_membership_payload(data: bytes) -> None:
    records = decode_membership(data)
    assert [r.wire for r in records] == [V["invite"], V["redeem"]]
    log = _log()
    carrier = Carrier(mv.INVITE_KEY.public_key, 1, records[1].hlc)
    assert log.check(records, carrier).ok
    log.add(records, carrier)
    assert log.rights_of(mv.BOB.public_key, mv.WALL_MS) is Rights.READ
    assert log.authorize(mv.BOB.public_key, 1, mv.H, None).reason == "read-only"


def check_token(data: bytes) -> None:
    text = data.decode("ascii")
    token = decode_token(text, now_ms=mv.WALL_MS)
    assert token.genesis.wire == V["genesis"] and token.invite.wire == V["invite"]
    assert token.invite_seed == mv.INVITE_KEY.seed and token.keys == ((0, mv.EPOCH_ID, mv.EPOCH_KEY),)
    assert (token.secret, token.label) == (mv.SECRET, mv.LABEL)
    raw = base64.urlsafe_b64decode(text[3:] + "=" * (-len(text[3:]) % 4))
    assert cbor2.loads(raw)[0] == 1 and text.startswith("cs1")


CHECKS: dict[str, Callable[[bytes], None]] = {
    "genesis signature input": check_signature_input, "genesis": check_genesis,
    "genesis hash": check_genesis_hash, "space id": check_space_id, "scope digest": check_scope_digest,
    "grant": check_grant, "invite": check_invite, "redeem": check_redeem,
    "membership payload": check_membership_payload, "token": check_token,
}


def test_every_vector_in_the_doc_is_checked() -> None:
    assert set(V) == set(CHECKS) == {name for name, _what, _data in mv.vectors()}


@pytest.mark.parametrize("name", list(CHECKS))
def test_vector(name: str) -> None:
    CHECKS[name](V[name])
