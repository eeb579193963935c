"""The membership side of :class:`~crdt_sync.replica.Replica`: what an integrator calls to
let devices in and out of a space, and to keep or leave one (docs/DESIGN.md, "Spaces bound to
keys on a device"). The work is :class:`~crdt_sync.spaces.SpaceBook`'s and
:class:`~crdt_sync.members.Members`'; this mixin checks arguments, seals pending edits first
and runs each change in one store transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .errors import Rejected
from .membership import Member, Rights
from .replica_parts import ReplicaParts
from .results import SpaceInfo
from .values import check_name

#: An invite lives this long unless told otherwise (7 days).
INVITE_MS = 7 * 24 * 3600 * 1000

T = TypeVar("T")


class MembershipCommands(ReplicaParts):
    """Grants, revocations, invites, members, keep and leave (mixed into ``Replica``)."""

    def _publishing(self, space: str, change: Callable[[str], T]) -> T:
        """Run ``change(space_id)`` in one store transaction, after sealing pending edits; the
        cached membership log is dropped if it fails (it may hold what was not stored)."""
        self._check_open()
        sid = self._book.resolve(space)
        self.seal()
        try:
            with self._store.write():
                return change(sid)
        except BaseException:
            self._members.forget(sid)
            raise

    def check_writable(self, space: str, collection: str) -> None:
        """Whether this device may write to ``collection`` of ``space`` now (before anything
        is journaled): what every receiver will check of the envelope.

        Raises:
            Rejected: ``not-a-member`` (it holds no key of the space, or no grant),
                ``read-only``, ``expired``, ``out-of-scope``, ``revoked``.
        """
        if not self._secrets.keyring().epochs(space) and not (
                self._secrets.reload() and self._secrets.keyring().epochs(space)):  # (another process's)
            raise Rejected("not-a-member", f"this device holds no key of space {space}: a member "
                                           "must grant it access (or send it an invite) first")
        seq = self._store.chain_head(space, self.device_id)[0] + 1
        verdict = self._members.authorize(space, self.identity.public_key, seq, self._clock.wall() << 16,
                                          [collection])
        if not verdict.ok:
            raise Rejected(verdict.reason, f"this device may not write to {collection} in {space}: "
                                           f"{verdict.detail}")

    def rename_space(self, name_or_id: str, new_name: str) -> None:
        """Name the space ``new_name`` here, and publish it as its label (members see it)."""
        space = self._book.resolve(name_or_id)
        with self._store.write():
            self._book.rename(space, new_name)
        self._write_label(space, new_name)

    def space_infos(self) -> list[SpaceInfo]:
        """Each kept space: id, local name, this device's rights, how many members."""
        return self._book.infos(self.spaces(), self._clock.wall())

    def keep(self, space: str) -> None:
        """Keep and sync ``space`` (an id or local name) again after :meth:`leave`."""
        space = self._book.resolve(space)
        with self._store.write():
            self._store.join(space)

    def leave(self, space: str) -> None:
        """Stop keeping and syncing ``space``; its data stays until the space is kept again."""
        space = self._book.resolve(space)
        with self._store.write():
            self._store.join(space, joined=False)

    def grant(self, space: str, device: str | list[str], rights: str | Rights = "write",
              collections: list[str] | None = None, expires_ms: int = 0) -> None:
        """Grant ``rights`` (``"read"``, ``"write"``, ``"admin"``) in ``space`` to a device
        whose id is known (or to each of a list), scoped to ``collections`` (None: the whole
        space), for ``expires_ms`` from now (0: no end). The grant and the keys the device
        may read are published in one envelope of this device's chain.

        Raises:
            Rejected: this device may not grant that (``not-admin``, ``beyond-delegation``).
        """
        devices = [device] if isinstance(device, str) else list(device)
        for d in devices:
            check_name("device id", d)
        self._publishing(space, lambda sid: self._book.grant(sid, devices, rights, collections, expires_ms))

    def revoke(self, space: str, device: str) -> None:
        """Revoke ``device`` in ``space`` and rotate the space's key: its writes up to the
        last one this device holds stay valid everywhere, later ones are refused everywhere,
        and it cannot read what is written from now on (a new epoch it is not sealed to).

        Raises:
            Rejected: this device may not revoke (``not-admin``).
        """
        check_name("device id", device)
        self._publishing(space, lambda sid: self._book.revoke(sid, device))

    def invite(self, space: str, rights: str | Rights = "write", collections: list[str] | None = None,
               expires_ms: int = INVITE_MS, history: bool = True, grant_expires_ms: int = 0) -> str:
        """A single-use invite token to ``space``: whoever redeems it with :meth:`join`
        (before ``expires_ms`` from now, at most 30 days) becomes a member with ``rights``,
        scoped to ``collections``, for ``grant_expires_ms`` from now (0: no end), and reads
        the whole history (``history``) or only the current epoch on. The invite is published
        in this device's chain; the token is a secret (docs/DESIGN.md, "Single-use invites").

        Raises:
            Rejected: this device may not invite so (``not-admin``, ``beyond-delegation``).
        """
        return self._publishing(space, lambda sid: self._book.invite(sid, rights, collections, expires_ms,
                                                                     history, grant_expires_ms))

    def members(self, space: str) -> list[Member]:
        """The devices with a valid grant in ``space``, their rights, expiry, and who
        granted them (revoked ones with ``revoked_after``)."""
        space = self._book.resolve(space)
        self.refresh()
        return self._members.log(space).members(self._clock.wall())
