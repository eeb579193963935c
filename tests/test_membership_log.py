"""MembershipLog: each validity rule of docs/DESIGN.md, "Membership", and each refusal reason,
reproduced as the attack or the mistake it guards against."""

from __future__ import annotations

from typing import Any

from crdt_sync.identity import device_id
from crdt_sync.membership import (
    Carrier,
    MembershipLog,
    Rights,
    Verdict,
    make_genesis,
    make_grant,
    make_invite,
    make_keys,
    make_redeem,
    make_revoke,
    scope_digest,
    space_id_of,
)
from tests.membership_helpers import ADMIN, BOB, CAROL, DAVE, DAY_MS, ERIN, WALL_MS, World, hlc, key

SCOPE_KEY = bytes(range(32))
NOTES, EQUIPMENT, PHOTOS = (scope_digest(SCOPE_KEY, c) for c in ("notes", "equipment", "photos"))


def reason(verdict: Verdict) -> str:
    return "ok" if verdict.ok else verdict.reason


def check(world: World, log: MembershipLog, author: Any, records: list[Any], at: int,
          seq: int | None = None) -> str:
    seq = world.seqs.get(author.public_key, 0) + 1 if seq is None else seq
    return reason(log.check(records, Carrier(author.public_key, seq, at)))


def write(log: MembershipLog, author: Any, seq: int = 1, at: int = hlc(5000),
          collections: list[bytes] | None = None) -> str:
    return reason(log.authorize(author.public_key, seq, at, collections))


# -- rule 1: the genesis -------------------------------------------------------------------------
def test_the_genesis_makes_its_creator_admin() -> None:
    world = World()
    log = world.log()
    assert write(log, ADMIN) == "ok" and write(log, ADMIN, collections=[NOTES]) == "ok"
    assert log.rights_of(ADMIN.public_key, WALL_MS) is Rights.ADMIN
    assert log.authority(ADMIN.public_key) == world.genesis.hash
    assert log.genesis() == world.genesis
    (member,) = log.members(WALL_MS)
    assert (member.device, member.via, member.rights) == (ADMIN.id, "genesis", Rights.ADMIN)
    assert member.granted_by == ADMIN.id


def test_a_stranger_is_not_a_member() -> None:
    log = World().log()
    assert write(log, BOB) == "not-a-member"
    assert not log.can_read(BOB.public_key, WALL_MS) and log.rights_of(BOB.public_key, WALL_MS) is None
    assert log.authority(BOB.public_key) is None


def test_without_the_genesis_every_record_waits_for_it() -> None:
    world = World()
    grant = world.grant(ADMIN, world.genesis.hash, BOB)
    log = MembershipLog(world.space)
    assert check(world, log, ADMIN, [grant], hlc(1000), seq=2) == "unknown-proof"
    log.add([world.genesis], None)  # known from a token or the id: no carrier
    assert check(world, log, ADMIN, [grant], hlc(1000), seq=2) == "ok"


def test_a_genesis_of_another_space_is_not_this_one() -> None:
    world = World()
    other = make_genesis(ADMIN, hlc(0), nonce=bytes([1]) * 16)
    log = MembershipLog(world.space)
    log.add([other], None)
    assert log.genesis() is None
    assert check(world, log, ADMIN, [other], hlc(0), seq=1) == "wrong-space"


# -- grants and the write check ------------------------------------------------------------------
def test_write_read_only_and_scope() -> None:
    world = World()
    g = world.genesis.hash
    world.grant(ADMIN, g, BOB, Rights.WRITE, scope=[NOTES, EQUIPMENT])
    world.grant(ADMIN, g, CAROL, Rights.READ)
    log = world.log()
    assert write(log, BOB, collections=[NOTES]) == "ok"
    assert write(log, BOB, collections=[NOTES, EQUIPMENT]) == "ok"
    assert write(log, BOB, collections=[NOTES, PHOTOS]) == "out-of-scope"
    assert write(log, BOB, collections=None) == "ok"  # the relay cannot see collections
    assert write(log, CAROL) == "read-only" and write(log, CAROL, collections=[NOTES]) == "read-only"
    assert log.can_read(CAROL.public_key, WALL_MS) and log.rights_of(CAROL.public_key, WALL_MS) is Rights.READ


def test_two_grants_of_one_device_combine() -> None:
    world = World()
    g = world.genesis.hash
    world.grant(ADMIN, g, BOB, Rights.WRITE, scope=[NOTES])
    world.grant(ADMIN, g, BOB, Rights.WRITE, scope=[PHOTOS], not_after_ms=WALL_MS + DAY_MS)
    log = world.log()
    assert write(log, BOB, collections=[PHOTOS]) == "ok"
    assert write(log, BOB, at=hlc(2 * DAY_MS), collections=[PHOTOS]) == "expired"
    assert write(log, BOB, at=hlc(2 * DAY_MS), collections=[NOTES]) == "ok"
    assert write(log, BOB, collections=[NOTES, PHOTOS]) == "out-of-scope"


def test_an_expired_grant_is_judged_by_the_envelopes_clock() -> None:
    world = World()
    world.grant(ADMIN, world.genesis.hash, BOB, Rights.WRITE, not_after_ms=WALL_MS + DAY_MS)
    log = world.log()
    assert write(log, BOB, at=hlc(DAY_MS - 1, 65535)) == "ok"  # the last millisecond before it
    assert write(log, BOB, at=hlc(DAY_MS)) == "expired"
    # the reader's wall clock does not matter to the write check; it does to reading
    assert log.can_read(BOB.public_key, WALL_MS + DAY_MS - 1)
    assert not log.can_read(BOB.public_key, WALL_MS + DAY_MS)
    (member,) = [m for m in log.members(WALL_MS + 2 * DAY_MS) if m.device == BOB.id]
    assert member.not_after_ms == WALL_MS + DAY_MS  # an expired member is still listed, with its expiry


def test_a_kept_read_verdict_follows_grants_revocations_and_expiry() -> None:
    """``can_read`` keeps its answers (sessions ask at every read) until the log changes or
    the grant expires: asked first, then changed, the same log answers anew."""
    world = World()
    log = world.log()
    assert not log.can_read(BOB.public_key, WALL_MS)  # kept as a no ...
    grant = world.grant(ADMIN, world.genesis.hash, BOB, Rights.READ, not_after_ms=WALL_MS + DAY_MS)
    log.add([grant], world.sent[-1].carrier)
    assert log.can_read(BOB.public_key, WALL_MS)  # ... until a record arrives
    assert log.can_read(BOB.public_key, WALL_MS + DAY_MS - 1)
    assert not log.can_read(BOB.public_key, WALL_MS + DAY_MS)  # the kept yes ends at the expiry
    longer = world.grant(ADMIN, world.genesis.hash, BOB, Rights.READ, at=hlc(1500))
    log.add([longer], world.sent[-1].carrier)
    assert log.can_read(BOB.public_key, WALL_MS + 2 * DAY_MS)  # a grant that never expires
    revoke = world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=0)
    log.add([revoke], world.sent[-1].carrier)
    assert not log.can_read(BOB.public_key, WALL_MS)
    assert log.can_read(ADMIN.public_key, WALL_MS) and not log.can_read(CAROL.public_key, WALL_MS)


def test_an_admin_delegates_and_its_grants_count() -> None:
    world = World()
    bob_admin = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    carol = world.grant(BOB, bob_admin.hash, CAROL, Rights.WRITE, at=hlc(1500))
    log = world.log()
    assert write(log, CAROL) == "ok" and log.authority(CAROL.public_key) == carol.hash
    assert log.authority(BOB.public_key) == bob_admin.hash
    members = {m.device: m for m in log.members(WALL_MS)}
    assert members[CAROL.id].granted_by == BOB.id and members[CAROL.id].via == "grant"


# -- forged capabilities -------------------------------------------------------------------------
def test_a_proof_that_is_not_the_issuers_grant_is_forged() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    log = world.log()
    # Carol (a stranger) quotes the genesis as her authority, then Bob's admin grant
    g = world.genesis.hash
    by_carol = make_grant(CAROL, world.space, DAVE.public_key, Rights.ADMIN, [], 0, hlc(2000), g)
    assert check(world, log, CAROL, [by_carol], hlc(2000)) == "forged"
    by_carol = make_grant(CAROL, world.space, DAVE.public_key, Rights.ADMIN, [], 0, hlc(2000), bob.hash)
    assert check(world, log, CAROL, [by_carol], hlc(2000)) == "forged"
    log.add([by_carol], Carrier(CAROL.public_key, 1, hlc(2000)))
    assert write(log, DAVE) == "not-a-member"
    assert log.status(by_carol.hash) == Verdict(False, "forged", log.status(by_carol.hash).detail)  # type: ignore[union-attr]


def test_a_proof_that_is_not_a_grant_is_forged() -> None:
    world = World()
    revoke = world.revoke(ADMIN, world.genesis.hash, ERIN, 0)
    log = world.log()
    grant = make_grant(ADMIN, world.space, BOB.public_key, Rights.WRITE, [], 0, hlc(3000), revoke.hash)
    assert check(world, log, ADMIN, [grant], hlc(3000)) == "forged"


def test_a_proof_not_known_yet_is_skipped_like_a_gap() -> None:
    world = World()
    bob = make_grant(ADMIN, world.space, BOB.public_key, Rights.ADMIN, [], 0, hlc(1000), world.genesis.hash)
    carol = make_grant(BOB, world.space, CAROL.public_key, Rights.WRITE, [], 0, hlc(1500), bob.hash)
    log = world.log()
    assert check(world, log, BOB, [carol], hlc(1500)) == "unknown-proof"
    log.add([bob], Carrier(ADMIN.public_key, 2, hlc(1000)))
    assert check(world, log, BOB, [carol], hlc(1500)) == "ok"


def test_a_grant_whose_proof_does_not_count_does_not_count() -> None:
    world = World()
    bob = make_grant(ADMIN, world.space, BOB.public_key, Rights.ADMIN, [], 0, hlc(1000), world.genesis.hash)
    carol = make_grant(BOB, world.space, CAROL.public_key, Rights.WRITE, [], 0, hlc(1500), bob.hash)
    log = world.log()
    log.add([bob], Carrier(DAVE.public_key, 1, hlc(1000)))  # Bob's grant, carried by someone else
    assert check(world, log, BOB, [carol], hlc(1500)) == "forged"


# -- delegation never exceeds the delegator ------------------------------------------------------
def test_a_writer_cannot_grant() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.WRITE)
    log = world.log()
    grant = make_grant(BOB, world.space, CAROL.public_key, Rights.READ, [], 0, hlc(1500), bob.hash)
    assert check(world, log, BOB, [grant], hlc(1500)) == "not-admin"
    revoke = make_revoke(BOB, world.space, ADMIN.public_key, 1, hlc(1500), bob.hash)
    assert check(world, log, BOB, [revoke], hlc(1500)) == "not-admin"


def test_a_scoped_admin_grants_only_within_its_scope() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN, scope=[NOTES, EQUIPMENT])
    log = world.log()

    def grant(scope: list[bytes]) -> str:
        record = make_grant(BOB, world.space, CAROL.public_key, Rights.WRITE, scope, 0, hlc(1500), bob.hash)
        return check(world, log, BOB, [record], hlc(1500))

    assert grant([NOTES]) == "ok" and grant([NOTES, EQUIPMENT]) == "ok"
    assert grant([NOTES, PHOTOS]) == "beyond-delegation"
    assert grant([]) == "beyond-delegation"  # the whole space is wider than two collections


def test_an_expiring_admin_grants_only_until_its_own_expiry() -> None:
    world = World()
    end = WALL_MS + DAY_MS
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN, not_after_ms=end)
    log = world.log()

    def grant(not_after_ms: int, at: int = hlc(1500)) -> str:
        record = make_grant(BOB, world.space, CAROL.public_key, Rights.WRITE, [], not_after_ms, at, bob.hash)
        return check(world, log, BOB, [record], at)

    assert grant(end) == "ok" and grant(end - 1) == "ok"
    assert grant(end + 1) == "beyond-delegation"
    assert grant(0) == "beyond-delegation"  # "never" outlives the delegator
    assert grant(end, at=hlc(DAY_MS)) == "expired"  # issued after its own grant ended


def test_proof_chains_are_at_most_16_deep() -> None:
    world = World()
    proof, issuer = world.genesis.hash, ADMIN
    for depth in range(1, 17):
        subject = key(100 + depth)
        proof = world.grant(issuer, proof, subject, Rights.ADMIN, at=hlc(depth)).hash
        issuer = subject
    log = world.log()
    assert write(log, issuer) == "ok"  # depth 16
    deeper = make_grant(issuer, world.space, BOB.public_key, Rights.WRITE, [], 0, hlc(100), proof)
    assert check(world, log, issuer, [deeper], hlc(100)) == "beyond-delegation"
    log.add([deeper], Carrier(issuer.public_key, 2, hlc(100)))
    assert write(log, BOB) == "not-a-member"


# -- placement, spaces ---------------------------------------------------------------------------
def test_a_grant_replayed_into_another_space_is_refused() -> None:
    site = World()
    other = World(creator=ADMIN)
    other.genesis = make_genesis(ADMIN, hlc(0), nonce=bytes([2]) * 16)
    other.space = space_id_of(other.genesis)
    grant = site.grant(ADMIN, site.genesis.hash, BOB)
    log = MembershipLog(other.space)
    log.add([other.genesis], Carrier(ADMIN.public_key, 1, hlc(0)))
    assert check(other, log, ADMIN, [grant], hlc(1000), seq=2) == "wrong-space"
    log.add([grant], Carrier(ADMIN.public_key, 2, hlc(1000)))
    assert write(log, BOB) == "not-a-member"


def test_records_are_carried_by_their_issuer() -> None:
    world = World()
    grant = make_grant(ADMIN, world.space, BOB.public_key, Rights.WRITE, [], 0, hlc(1000), world.genesis.hash)
    log = world.log()
    assert check(world, log, BOB, [grant], hlc(1000)) == "misplaced-record"  # Bob carries his own grant
    assert check(world, log, ADMIN, [grant], hlc(999)) == "misplaced-record"  # dated after its carrier
    assert check(world, log, ADMIN, [grant], hlc(1000)) == "ok"
    assert reason(log.check([grant], None)) == "misplaced-record"  # type: ignore[arg-type]
    log.add([grant], Carrier(BOB.public_key, 1, hlc(1000)))
    assert write(log, BOB) == "not-a-member"  # held, but it does not count


def test_check_changes_nothing() -> None:
    world = World()
    grant = make_grant(ADMIN, world.space, BOB.public_key, Rights.WRITE, [], 0, hlc(1000), world.genesis.hash)
    log = world.log()
    assert check(world, log, ADMIN, [grant], hlc(1000)) == "ok"
    assert write(log, BOB) == "not-a-member" and log.status(grant.hash) is None


# -- revocation ------------------------------------------------------------------------------------
def test_a_revoked_members_writes_before_the_cut_stay_and_after_it_are_refused() -> None:
    world = World()
    world.grant(ADMIN, world.genesis.hash, BOB)
    for _ in range(5):
        world.write(BOB)
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=3)
    log = world.log()
    assert log.cuts() == {BOB.public_key: 3}
    assert [write(log, BOB, seq=s) for s in (1, 3, 4, 5)] == ["ok", "ok", "revoked", "revoked"]
    assert not log.can_read(BOB.public_key, WALL_MS) and log.authority(BOB.public_key) is None
    assert BOB.public_key not in log.readers(WALL_MS)
    (member,) = [m for m in log.members(WALL_MS) if m.device == BOB.id]
    assert member.revoked_after == 3


def test_a_revoked_admins_records_count_up_to_the_cut() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    world.grant(BOB, bob.hash, CAROL, at=hlc(1100))  # Bob's seq 1
    world.grant(BOB, bob.hash, DAVE, at=hlc(1200))   # Bob's seq 2
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=1)
    log = world.log()
    assert write(log, CAROL) == "ok"
    assert write(log, DAVE) == "not-a-member"
    late = make_grant(BOB, world.space, ERIN.public_key, Rights.WRITE, [], 0, hlc(3000), bob.hash)
    assert check(world, log, BOB, [late], hlc(3000)) == "revoked"


def test_the_lowest_cut_wins() -> None:
    world = World()
    world.grant(ADMIN, world.genesis.hash, BOB)
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=5, at=hlc(2000))
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=2, at=hlc(2100))
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=9, at=hlc(2200))
    assert world.log().cuts() == {BOB.public_key: 2}


def test_only_an_admin_revokes() -> None:
    world = World()
    world.grant(ADMIN, world.genesis.hash, BOB, Rights.WRITE)
    bob_grant = world.log().authority(BOB.public_key)
    assert bob_grant is not None
    world.revoke(BOB, bob_grant, ADMIN, after_seq=0)
    log = world.log()
    assert log.cuts() == {} and write(log, ADMIN) == "ok"


def test_mutual_revocation_the_earlier_wins() -> None:
    for bob_first in (False, True):
        world = World()
        bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
        world.write(ADMIN)
        world.write(BOB)
        # concurrently: each revokes the other, having seen the other's chain up to now
        admin_at, bob_at = (hlc(3000), hlc(2000)) if bob_first else (hlc(2000), hlc(3000))
        world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=world.seqs[BOB.public_key], at=admin_at)
        world.revoke(BOB, bob.hash, ADMIN, after_seq=world.seqs[ADMIN.public_key] - 1, at=bob_at)
        for deliveries in (world.sent, world.sent[::-1]):
            log = world.log(deliveries)
            loser, winner = (ADMIN, BOB) if bob_first else (BOB, ADMIN)
            assert list(log.cuts()) == [loser.public_key]
            assert write(log, winner, seq=9) == "ok" and write(log, loser, seq=9) == "revoked"


def test_mutual_revocation_at_the_same_hlc_is_ordered_by_issuer_key() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=0, at=hlc(2000))
    world.revoke(BOB, bob.hash, ADMIN, after_seq=2, at=hlc(2000))
    assert BOB.public_key < ADMIN.public_key  # so Bob's revocation is applied first, and wins
    for deliveries in (world.sent, world.sent[::-1]):
        assert world.log(deliveries).cuts() == {ADMIN.public_key: 2}


def test_an_expired_admin_cannot_revoke() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN, not_after_ms=WALL_MS + DAY_MS)
    world.revoke(BOB, bob.hash, ADMIN, after_seq=0, at=hlc(2 * DAY_MS))
    log = world.log()
    assert log.cuts() == {}
    revoke = make_revoke(BOB, world.space, ADMIN.public_key, 0, hlc(2 * DAY_MS), bob.hash)
    assert check(world, log, BOB, [revoke], hlc(2 * DAY_MS), seq=1) == "expired"


def test_a_fork_of_an_author_voids_its_records() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    world.grant(BOB, bob.hash, CAROL, at=hlc(1500))
    log = world.log()
    assert write(log, CAROL) == "ok"
    log.fork(BOB.public_key)
    assert write(log, CAROL) == "not-a-member"


# -- invites ---------------------------------------------------------------------------------------
def test_an_invite_redeemed_once_admits_the_joiner() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key, Rights.WRITE, scope=[NOTES],
                          grant_not_after_ms=WALL_MS + 60 * DAY_MS)
    log = world.log()
    assert invite_key.public_key in log.readers(WALL_MS)  # rotations before the join include it
    assert invite_key.public_key not in log.readers(WALL_MS + 1000 + 7 * DAY_MS)  # expired
    delivery = world.redeem(invite_key, invite, DAVE)
    assert reason(log.check(delivery.records, delivery.carrier)) == "ok"  # type: ignore[arg-type]
    log.add(delivery.records, delivery.carrier)
    assert write(log, DAVE, collections=[NOTES]) == "ok"
    assert write(log, DAVE, collections=[PHOTOS]) == "out-of-scope"
    assert write(log, DAVE, at=hlc(61 * DAY_MS), collections=[NOTES]) == "expired"
    assert invite_key.public_key not in log.readers(WALL_MS) and DAVE.public_key in log.readers(WALL_MS)
    (member,) = [m for m in log.members(WALL_MS) if m.device == DAVE.id]
    assert (member.via, member.granted_by, member.rights, member.scope) == ("invite", ADMIN.id, Rights.WRITE,
                                                                            (NOTES,))
    assert write(log, invite_key) == "not-a-member"  # the invite key itself writes nothing


def test_the_admin_need_not_be_online() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key, publish=False)
    delivery = world.redeem(invite_key, invite, DAVE)
    log = MembershipLog(world.space)
    log.add([world.genesis], None)
    assert reason(log.check(delivery.records, delivery.carrier)) == "ok"  # type: ignore[arg-type]
    log.add(delivery.records, delivery.carrier)
    assert write(log, DAVE) == "ok"


def test_a_reused_invite_voids_both_redemptions() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key)
    first = world.redeem(invite_key, invite, DAVE)
    second = world.redeem(invite_key, invite, ERIN, at=hlc(3100))
    for deliveries in (world.sent, world.sent[::-1]):
        log = world.log(deliveries)
        assert write(log, DAVE) == "not-a-member" and write(log, ERIN) == "not-a-member"
        assert log.reused_invites() == [invite_key.public_key]
        reused = {m.device: m for m in log.members(WALL_MS) if m.reused_invite}
        assert set(reused) == {DAVE.id, ERIN.id} and reused[DAVE.id].granted_by == ADMIN.id
        assert invite_key.public_key not in log.readers(WALL_MS)
        assert not log.can_read(DAVE.public_key, WALL_MS)
        assert log.status(second.records[1].hash).reason == "reused-invite"  # type: ignore[union-attr]
    log = world.log([world.sent[0], world.sent[1], first])
    assert write(log, DAVE) == "ok"
    log.fork(invite_key.public_key)  # the integrity issue found the fork first
    assert write(log, DAVE) == "not-a-member"


def test_a_redeem_after_the_invite_expired_is_refused() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key, days=30)
    log = world.log()
    late = world.redeem(invite_key, invite, DAVE, at=hlc(30 * DAY_MS + 1000))  # its not_after_ms
    assert reason(log.check(late.records, late.carrier)) == "expired"  # type: ignore[arg-type]


def test_an_invite_by_a_non_admin_is_refused() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.WRITE)
    invite_key = key(9)
    invite = make_invite(BOB, world.space, invite_key.public_key, Rights.WRITE, [], WALL_MS + DAY_MS, 0, True,
                         hlc(1500), bob.hash)
    log = world.log()
    assert check(world, log, BOB, [invite], hlc(1500)) == "not-admin"
    redeem = make_redeem(invite_key, world.space, DAVE.public_key, hlc(1600), invite.hash)
    assert check(world, log, invite_key, [invite, redeem], hlc(1600), seq=1) == "not-admin"


def test_an_invite_never_exceeds_its_issuer() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN, scope=[NOTES],
                      not_after_ms=WALL_MS + 3 * DAY_MS)
    log = world.log()

    def invite(scope: list[bytes], grant_end: int, days: int = 1) -> str:
        end = WALL_MS + days * DAY_MS
        record = make_invite(BOB, world.space, key(9).public_key, Rights.WRITE, scope, end, grant_end, True,
                             hlc(1500), bob.hash)
        return check(world, log, BOB, [record], hlc(1500))

    assert invite([NOTES], WALL_MS + DAY_MS) == "ok"
    assert invite([PHOTOS], WALL_MS + DAY_MS) == "beyond-delegation"
    assert invite([NOTES], 0) == "beyond-delegation"
    assert invite([NOTES], WALL_MS + DAY_MS, days=4) == "beyond-delegation"


def test_redemption_envelopes_hold_exactly_the_invite_and_its_redeem_at_seq_1() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key)
    other = world.invite(ADMIN, world.genesis.hash, key(10))
    redeem = make_redeem(invite_key, world.space, DAVE.public_key, hlc(3000), invite.hash)
    log = world.log()
    assert check(world, log, invite_key, [invite, redeem], hlc(3000), seq=1) == "ok"
    assert check(world, log, invite_key, [invite, redeem], hlc(3000), seq=2) == "misplaced-record"
    assert check(world, log, invite_key, [redeem], hlc(3000), seq=1) == "misplaced-record"
    assert check(world, log, invite_key, [other, redeem], hlc(3000), seq=1) == "misplaced-record"
    assert check(world, log, DAVE, [invite, redeem], hlc(3000), seq=1) == "misplaced-record"
    assert check(world, log, invite_key, [invite, redeem], hlc(2999), seq=1) == "misplaced-record"
    forged = make_redeem(invite_key, world.space, DAVE.public_key, hlc(3000), other.hash)
    assert check(world, log, invite_key, [other, forged], hlc(3000), seq=1) == "misplaced-record"


def test_a_revoked_admins_invite_counts_only_if_dated_before_the_revocation() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=0, at=hlc(5000))
    log = world.log()
    for dated, expected in ((hlc(4999), "ok"), (hlc(5000), "revoked")):  # unpublished: judged by hlc
        invite_key = key(20 + dated % 7)
        invite = make_invite(BOB, world.space, invite_key.public_key, Rights.WRITE, [], WALL_MS + DAY_MS, 0,
                             True, dated, bob.hash)
        redeem = make_redeem(invite_key, world.space, DAVE.public_key, hlc(6000), invite.hash)
        assert check(world, log, invite_key, [invite, redeem], hlc(6000), seq=1) == expected
    # published in Bob's chain after the seq the revoking admin had seen: judged by its position
    invite_key = key(30)
    invite = make_invite(BOB, world.space, invite_key.public_key, Rights.WRITE, [], WALL_MS + DAY_MS, 0, True,
                         hlc(4000), bob.hash)
    log.add([invite], Carrier(BOB.public_key, 1, hlc(4000)))
    redeem = make_redeem(invite_key, world.space, DAVE.public_key, hlc(6000), invite.hash)
    assert check(world, log, invite_key, [invite, redeem], hlc(6000), seq=1) == "revoked"


def test_an_admin_revokes_an_unredeemed_invite_by_its_key() -> None:
    world = World()
    invite_key = key(9)
    invite = world.invite(ADMIN, world.genesis.hash, invite_key)
    world.revoke(ADMIN, world.genesis.hash, invite_key, after_seq=0)
    log = world.log()
    assert invite_key.public_key not in log.readers(WALL_MS)
    delivery = world.redeem(invite_key, invite, DAVE)
    assert reason(log.check(delivery.records, delivery.carrier)) == "revoked"  # type: ignore[arg-type]


# -- keys records ----------------------------------------------------------------------------------
def test_epochs_and_boxes() -> None:
    world = World()
    g = world.genesis.hash
    bob = world.grant(ADMIN, g, BOB, Rights.WRITE)
    carol = world.grant(ADMIN, g, CAROL, Rights.READ)
    world.keys(ADMIN, g, 0, [ADMIN.public_key], at=hlc(100))
    world.keys(BOB, bob.hash, 1, [ADMIN.public_key, BOB.public_key], at=hlc(4000))
    world.keys(ADMIN, g, 1, [CAROL.public_key], at=hlc(4100))  # the same epoch, split over two records
    log = world.log()
    epochs = log.epochs()
    assert [(e.n, e.epoch_id, e.hlc) for e in epochs] == [(0, bytes(16), hlc(100)),
                                                          (1, bytes([1]) * 16, hlc(4000))]
    assert epochs[1].recipients == tuple(sorted([ADMIN.public_key, BOB.public_key, CAROL.public_key]))
    assert log.boxes_for(ADMIN.public_key) == [(0, bytes(16), b"sealed" + ADMIN.public_key[:4]),
                                               (1, bytes([1]) * 16, b"sealed" + ADMIN.public_key[:4])]
    assert log.boxes_for(DAVE.public_key) == []
    by_reader = make_keys(CAROL, world.space, 2, bytes([2]) * 16, [(CAROL.public_key, b"s")], hlc(5000),
                          carol.hash)
    assert check(world, log, CAROL, [by_reader], hlc(5000)) == "read-only"
    log.add([by_reader], Carrier(CAROL.public_key, 1, hlc(5000)))
    assert [e.n for e in log.epochs()] == [0, 1]


def test_a_revocation_rotates_in_the_same_envelope() -> None:
    world = World()
    g = world.genesis.hash
    world.grant(ADMIN, g, BOB)
    log = world.log()
    revoke = make_revoke(ADMIN, world.space, BOB.public_key, 0, hlc(5000), g)
    keys = make_keys(ADMIN, world.space, 1, bytes([1]) * 16, [(p, b"s") for p in log.readers(WALL_MS)
                                                              if p != BOB.public_key], hlc(5000), g)
    assert check(world, log, ADMIN, [revoke, keys], hlc(5000)) == "ok"
    log.add([revoke, keys], Carrier(ADMIN.public_key, 3, hlc(5000)))
    assert log.readers(WALL_MS) == [ADMIN.public_key] and log.epochs()[0].recipients == (ADMIN.public_key,)
    assert device_id(log.readers(WALL_MS)[0]) == ADMIN.id


def test_a_record_that_depends_on_a_cut_says_revoked_so_receivers_keep_it() -> None:
    """Bob revoked the creator first (by the hlc order), but a device hears of the creator's
    later revocation of Bob first: until Bob's arrives, what Bob's grantees issued depends on
    a cut that will be lifted. Its verdict is ``revoked`` (held and set aside, judged again),
    not ``forged`` (refused for good), or that device would never admit Dave."""
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)            # creator's seq 2
    carol = world.grant(BOB, bob.hash, CAROL, Rights.ADMIN, at=hlc(1100))      # Bob's seq 1
    dave = world.grant(CAROL, carol.hash, DAVE, Rights.WRITE, at=hlc(1200))    # Carol's seq 1
    world.revoke(ADMIN, world.genesis.hash, BOB, after_seq=0, at=hlc(3000))    # creator's seq 3
    bobs_revoke = world.revoke(BOB, bob.hash, ADMIN, after_seq=2, at=hlc(2000))  # Bob's seq 2: earlier
    assert world.log().cuts() == {ADMIN.public_key: 2} and write(world.log(), DAVE) == "ok"
    log = world.log([*world.sent[:2], world.sent[4]])  # the genesis, Bob's grant, the revocation of Bob
    assert log.cuts() == {BOB.public_key: 0}
    assert check(world, log, BOB, [carol], hlc(1100), seq=1) == "revoked"
    log.add([carol], Carrier(BOB.public_key, 1, hlc(1100)))
    assert check(world, log, CAROL, [dave], hlc(1200), seq=1) == "revoked"
    log.add([dave], Carrier(CAROL.public_key, 1, hlc(1200)))
    assert check(world, log, BOB, [bobs_revoke], hlc(2000), seq=2) == "ok"
    log.add([bobs_revoke], Carrier(BOB.public_key, 2, hlc(2000)))
    assert log.cuts() == {ADMIN.public_key: 2} and write(log, DAVE) == "ok"


def test_the_creators_first_envelope_carries_the_genesis_and_epoch_0() -> None:
    world = World()
    boxes = [(ADMIN.public_key, b"sealed")]
    keys = make_keys(ADMIN, world.space, 0, bytes(16), boxes, hlc(0), world.genesis.hash)
    log = MembershipLog(world.space)
    assert check(world, log, ADMIN, [world.genesis, keys], hlc(0), seq=1) == "ok"
    assert check(world, log, ADMIN, [world.genesis, keys], hlc(0), seq=2) == "misplaced-record"
    assert check(world, log, BOB, [world.genesis], hlc(0), seq=1) == "misplaced-record"
    log.add([world.genesis, keys], Carrier(ADMIN.public_key, 1, hlc(0)))
    assert [e.n for e in log.epochs()] == [0] and log.genesis() == world.genesis


def test_a_forked_authors_records_are_refused_as_forked() -> None:
    world = World()
    bob = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN)
    log = world.log()
    log.fork(BOB.public_key)
    grant = make_grant(BOB, world.space, CAROL.public_key, Rights.WRITE, [], 0, hlc(1500), bob.hash)
    assert check(world, log, BOB, [grant], hlc(1500)) == "forked"
    assert write(log, BOB) == "ok"  # its grant is the creator's; its chain is the fork rules' matter


def test_authority_prefers_a_live_grant_when_asked_at_a_time() -> None:
    world = World()
    admin = world.grant(ADMIN, world.genesis.hash, BOB, Rights.ADMIN, not_after_ms=WALL_MS + DAY_MS)
    writer = world.grant(ADMIN, world.genesis.hash, BOB, Rights.WRITE)
    log = world.log()
    assert log.authority(BOB.public_key) == admin.hash  # the strongest
    assert log.authority(BOB.public_key, WALL_MS) == admin.hash
    assert log.authority(BOB.public_key, WALL_MS + DAY_MS) == writer.hash  # the admin grant has ended
