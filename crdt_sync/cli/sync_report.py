"""What ``crdt-sync sync`` says about a session: envelopes sent, acknowledged as stored by the
relay, refused and by whom and why, received; and how the session ended.

One :class:`SyncReport` is built from the session and its outcome. It is the JSON result of
a sync that finished, and the ``sync`` object inside the ``--json`` error of one that did
not (:class:`SyncFailed`), so a script sees the same counts either way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import CrdtSyncError
from ..protocol import Closed, Quarantined, Received, Session
from ..protocol.events import ClockRefused, HeldBack, SnapshotVerdict
from ..protocol.messages import E_AUTH_FAILED, E_LIMIT, E_REJECTED
from .output import EXIT_ERROR, EXIT_REJECTED

#: Codes with which a relay refuses this device (or this device an envelope): exit 5.
REFUSALS = (E_AUTH_FAILED, E_REJECTED, E_LIMIT)


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refusal that ended or marked the session."""

    #: ``"relay"``: the relay refused this device or what it sent; ``"device"``: this device
    #: refused what the relay sent
    by: str
    #: the protocol's error name (``rejected-envelope``, ``limit``, ``auth-failed``, ...)
    kind: str
    reason: str


@dataclass(frozen=True, slots=True)
class SyncReport:
    """One ``crdt-sync sync`` session, counted."""

    relay: str
    synced: bool
    #: ``synced``, ``refused-by-relay``, ``refused-by-device``, ``link-dropped``, ``timeout``
    #: or ``error`` (another protocol error)
    ended: str
    spaces: list[str]
    #: envelopes this device sent
    sent: int
    #: of those, how many the relay acknowledged as stored (batches its ACKs covered)
    stored: int
    #: sent but not acknowledged (in flight when the session ended): sent again next time
    unacknowledged: int
    #: envelopes received and applied
    received: int
    #: received envelopes this device already held
    duplicates: int
    refused: list[Refusal] = field(default_factory=list)
    bytes_in: int = 0
    bytes_out: int = 0
    #: authors set aside during the session (``by``: ``peer``, the relay, or ``this device``):
    #: ``{"space", "author", "from_seq", "reason", "by"}``; everything else synced
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    #: chains held back because their clock was too far ahead (``by``: ``relay`` or ``this
    #: device``): ``{"by", "space", "author", "seq", "ahead_ms"}``
    held_back: list[dict[str, Any]] = field(default_factory=list)
    #: snapshots moved (docs/PROTOCOL.md, "Snapshots in sessions"; ``by``: ``relay`` for this
    #: device's snapshot answered by the relay, ``this device`` for one it received):
    #: ``{"by", "space", "verdict", "detail", "bytes"}``
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    #: this device's id (to say "this device's clock"); not part of the JSON
    device: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["device"]
        return out

    def counts(self) -> str:
        """The counts in words, for messages."""
        text = (f"sent {self.sent} envelope{_s(self.sent)}, {self.stored} acknowledged as "
                f"stored by the relay")
        if self.unacknowledged:
            text += f", {self.unacknowledged} not acknowledged (sent again next time)"
        text += f"; received {self.received}"
        if self.duplicates:
            text += f" (and {self.duplicates} already held)"
        return text


class SyncFailed(CrdtSyncError):
    """A sync that did not finish, with the counts of what it did (``report``) and the exit
    code and kind the CLI reports it with."""

    def __init__(self, message: str, exit_code: int, kind: str, report: SyncReport | None) -> None:
        super().__init__(message)
        self.exit_code, self.kind, self.report = exit_code, kind, report


def build(relay: str, session: Session, closed: Closed | None, synced: bool, events: list[Any],
          bytes_in: int, bytes_out: int, stalled: float | None = None, device: str = "") -> SyncReport:
    """The report of a one-shot session that has ended (``stalled``: the seconds without
    progress after which the CLI ended it)."""
    ended = "synced" if synced else "error"
    refused = []
    if not synced and stalled is not None:
        ended = "timeout"
    elif not synced and closed is not None:
        if closed.link_lost:
            ended = "link-dropped"
        elif closed.code in REFUSALS:
            by = "relay" if closed.by_peer else "device"
            ended = f"refused-by-{by}"
            refused.append(Refusal(by, closed.name, closed.reason))
        elif closed.name == "timeout":
            ended = "timeout"
    received = [e for e in events if isinstance(e, Received)]
    quarantined = [{"space": e.space, "author": e.author, "from_seq": e.from_seq, "reason": e.reason,
                    "by": "peer" if e.by_peer else "this device"}
                   for e in events if isinstance(e, Quarantined)]
    held_back = [{"by": "relay" if isinstance(e, ClockRefused) else "this device", "space": e.space,
                  "author": e.author, "seq": e.seq, "ahead_ms": e.ahead_ms}
                 for e in events if isinstance(e, ClockRefused | HeldBack)]
    snapshots = [{"by": "relay" if e.by_peer else "this device", "space": e.space, "verdict": e.verdict,
                  "detail": e.detail, "bytes": e.size} for e in events if isinstance(e, SnapshotVerdict)]
    return SyncReport(
        relay=relay, synced=synced, ended=ended, spaces=session.shared_spaces(),
        sent=session.envelopes_out, stored=session.envelopes_acked,
        unacknowledged=max(0, session.envelopes_out - session.envelopes_acked),
        received=sum(e.applied for e in received), duplicates=sum(e.duplicates for e in received),
        refused=refused, bytes_in=bytes_in, bytes_out=bytes_out, quarantined=quarantined,
        held_back=held_back, snapshots=snapshots, device=device)


def failure(report: SyncReport, closed: Closed | None) -> SyncFailed:
    """The error for a report that is not synced: its cause, its counts, the next step."""
    counts = report.counts()
    again = "run sync again: it resumes where it stopped"
    reason = closed.reason if closed is not None else "the session ended"
    if report.ended == "refused-by-relay":
        assert closed is not None
        return SyncFailed(f"the relay refused this device ({closed.name}: {reason}); {counts}. "
                          f"Fix the cause the relay names, then {again}",
                          EXIT_REJECTED, closed.name, report)
    if report.ended == "refused-by-device":
        assert closed is not None
        return SyncFailed(f"this device refused an envelope the relay sent ({reason}); nothing of "
                          f"that batch was applied; {counts}. `crdt-sync status` lists the "
                          f"refusals recorded", EXIT_REJECTED, closed.name, report)
    if report.ended == "link-dropped":
        return SyncFailed(f"the link to the relay dropped before the sync finished ({reason}); "
                          f"{counts}; {again}", EXIT_ERROR, "link-dropped", report)
    if report.ended == "timeout":
        if closed is None or closed.name != "timeout":  # ended by the CLI's --timeout watch
            reason = "nothing was received or acknowledged for the --timeout"
        return SyncFailed(f"sync with {report.relay} timed out ({reason}); {counts}; {again}",
                          EXIT_ERROR, "timeout", report)
    kind = closed.name if closed is not None else "not-synced"
    return SyncFailed(f"sync with {report.relay} did not finish ({kind}: {reason}); {counts}; {again}",
                      EXIT_ERROR, kind, report)


def no_spaces(relay: str) -> SyncFailed:
    """A device that keeps no space has nothing to sync: said, not reported as synced."""
    return SyncFailed("this device keeps no spaces, so there is nothing to sync with "
                      f"{relay}; create one (crdt-sync spaces create NAME), join one with an invite "
                      "token (crdt-sync join TOKEN), or keep one again (crdt-sync keep SPACE)",
                      EXIT_ERROR, "no-spaces", None)


def summary(report: SyncReport) -> str:
    """The human lines of a sync that finished."""
    lines = [f"synced {', '.join(report.spaces)} with {report.relay}: {report.counts()}"]
    for q in report.quarantined:
        who = "the relay set aside" if q["by"] == "peer" else "set aside"
        lines.append(f"{who} {q['author']} in {q['space']} from seq {q['from_seq']} ({q['reason']}): "
                     "its later envelopes there are skipped, everything else synced; see "
                     "`crdt-sync status`")
    for note in report.held_back:
        whose = "this device's" if note["author"] == report.device else f"{note['author'][:12]}'s"
        lines.append(f"{note['by']} holds back {whose} envelopes of {note['space']} from seq "
                     f"{note['seq']}: stamped {note['ahead_ms'] / 3_600_000:.1f} hours ahead of its "
                     "clock; they sync once the clocks agree")
    for snap in report.snapshots:
        if snap["by"] == "relay":
            lines.append(f"the relay answered this device's snapshot of {snap['space']}: {snap['verdict']} "
                         f"({snap['detail']})")
        else:
            lines.append(f"snapshot of {snap['space']} from the relay ({snap['bytes']} bytes): "
                         f"{snap['verdict']} ({snap['detail']})")
    return "\n".join(lines)


def _s(count: int) -> str:
    return "" if count == 1 else "s"
