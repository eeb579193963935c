"""What the membership log takes in (a record's carrier) and hands out (verdicts, members,
epochs): small frozen values."""

from __future__ import annotations

from dataclasses import dataclass

from .records import Rights


@dataclass(frozen=True, slots=True)
class Carrier:
    """The envelope that carries a record: its author's key, seq and hlc."""

    author: bytes
    seq: int
    hlc: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """``ok``, or why not: ``reason`` is one of the codes of docs/DESIGN.md, "Membership"."""

    ok: bool
    reason: str = ""
    detail: str = ""


OK = Verdict(True)


@dataclass(frozen=True, slots=True)
class Member:
    """One device's standing in a space (its strongest valid grant).

    ``via`` is ``"genesis"``, ``"grant"`` or ``"invite"``; ``revoked_after`` the last valid
    seq of a revoked device's chain. ``reused_invite`` marks a device whose only grant was
    a redemption of an invite that was redeemed twice (void: an admin re-invites it).
    """

    device: str
    rights: Rights
    scope: tuple[bytes, ...]
    not_after_ms: int
    granted_by: str
    via: str
    revoked_after: int | None
    reused_invite: bool = False


@dataclass(frozen=True, slots=True)
class EpochInfo:
    """A key epoch named by valid keys records (several records of one epoch are merged)."""

    n: int
    epoch_id: bytes
    recipients: tuple[bytes, ...]
    hlc: int


__all__ = ["OK", "Carrier", "EpochInfo", "Member", "Verdict"]
