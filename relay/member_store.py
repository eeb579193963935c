"""Membership at the relay's store: each space's log, the judging of new envelopes, and what
serving a space may show (part of :class:`~crdt_sync.relay.storage.RelayStore`, a mixin like
:mod:`~crdt_sync.relay.fork_store`: the same owner, the same state).

A space's log (:class:`~crdt_sync.relay.members.SpaceMembers`) is built, the first time it is
asked for after the space is loaded, from the committed membership envelopes (the backend's
``membership`` index) and the staged ones, and the keys whose chain forked; it is updated as
each membership envelope is accepted (so that a genesis and the data after it can come in one
frame). A receive that fails as a whole (:meth:`RelayStore.receive`) drops the logs it
changed: they are built again from what is stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

from crdt_sync.envelope import Envelope
from crdt_sync.errors import Rejected
from crdt_sync.identity import public_key_of
from crdt_sync.membership import is_membership

from .backend import EnvelopeRow, RelayBackend
from .members import ACCEPT, Judged, SpaceMembers


class _Space(Protocol):
    name: str
    vv: dict[str, int]
    forks: dict[str, int]
    members: SpaceMembers | None


class _Batch(Protocol):
    rows: list[EnvelopeRow]
    membership: list[tuple[str, str, int]]


class _Store(Protocol):
    reader: RelayBackend

    @property
    def _staged(self) -> _Batch: ...

    @property
    def _committing(self) -> _Batch | None: ...

    def _space(self, name: str) -> _Space: ...


class RelayMembership:
    """Each space's membership log and what it decides (mixed into RelayStore)."""

    @property
    def _mstore(self) -> _Store:
        return cast(_Store, self)

    def members(self, space: str) -> SpaceMembers:
        """The membership log of ``space`` (built from storage when not in memory)."""
        return self._members_of(self._mstore._space(space))

    def _members_of(self, st: _Space) -> SpaceMembers:
        members = st.members
        if members is None:
            members = st.members = SpaceMembers.load(st.name, self.membership_wires(st.name),
                                                     [public_key_of(a) for a in st.forks])
        return members

    def membership_wires(self, space: str) -> list[bytes]:
        """The membership envelopes of ``space``, committed and staged, in arrival order."""
        store = self._mstore
        staged = {key for b in (store._staged, store._committing)
                  if b is not None for key in b.membership if key[0] == space}
        return store.reader.membership_envelopes(space) + [
            row.wire for b in (store._staged, store._committing) if b is not None
            for row in b.rows if (row.space, row.author, row.seq) in staged]

    def forget_members(self, spaces: Iterable[str]) -> None:
        """Build these spaces' logs again from storage when next asked (records were added
        that were then not stored)."""
        for space in spaces:
            self._mstore._space(space).members = None

    #: whether membership decides what is stored and served (the relay setting
    #: ``membership``); off, every chain-valid envelope is stored and served to every device
    #: as before issue 12, and valid membership records are still indexed
    enforce_membership: bool  # set by RelayStore

    def judge_members(self, env: Envelope) -> Judged:
        """What membership says of ``env`` (new and chain-valid): see :func:`members.SpaceMembers.judge`.
        Off, everything is stored, and only a membership envelope is judged (for its records)."""
        if self.enforce_membership:
            return self.members(env.space).judge(env)
        if not is_membership(env.payload):
            return ACCEPT
        try:
            judged = self.members(env.space).judge(env)
        except Rejected:
            return ACCEPT
        return Judged(True, None, judged.records if judged.store else None)

    def past_cut(self, env: Envelope) -> int | None:
        """The cut of ``env``'s author when ``env`` is past it (None: it is not)."""
        if not self.enforce_membership:
            return None
        cut = self.members(env.space).cuts().get(env.author)
        return cut if cut is not None and env.seq > cut else None

    def can_read(self, space: str, device_key: bytes, now_ms: int) -> bool:
        """Rule 6: may this device be served ``space`` now?"""
        if not self.enforce_membership:
            return True
        st = self._mstore._space(space)  # (asked at every read: the log keeps its verdicts)
        return (st.members or self._members_of(st)).log.can_read(device_key, now_ms)

    def serving_stops(self, space: str) -> dict[str, int]:
        """``{author: first seq not served}``: fork points, and the seq after each cut."""
        st = self._mstore._space(space)
        cuts = self._members_of(st).cuts() if self.enforce_membership else {}
        if not cuts:
            return st.forks
        stops = {a: seq + 1 for a, seq in cuts.items()}
        for author, point in st.forks.items():
            stops[author] = min(point, stops.get(author, point))
        return stops

    def served_vector(self, space: str) -> dict[str, int]:
        """The version vector sessions see: each revoked author's chain up to its cut (what
        lies past it is stored, and served to no one while the cut stands)."""
        st = self._mstore._space(space)
        vv = dict(st.vv)
        if not self.enforce_membership:
            return vv
        for author, cut in self._members_of(st).cuts().items():
            top = vv.get(author)
            if top is not None and top > cut:
                if cut:
                    vv[author] = cut
                else:
                    del vv[author]
        return vv


__all__ = ["RelayMembership"]
