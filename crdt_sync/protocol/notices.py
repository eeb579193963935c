"""The session's notices about chains set aside (docs/PROTOCOL.md, "Quarantine" and "Clocks").

QUARANTINED: a side that sets an author aside tells the peer, which stops sending that
chain from the seq named. CLOCK_SKEW: a receiver holds back an envelope whose HLC is
further ahead of its wall clock than allowed and tells the sender, which sends it again
once the receiver's clock may have caught up. :class:`SessionNotices` makes and takes both
for one session; the session owns the per-space state it updates (:class:`SpaceState`).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import clocks
from ..envelope import open_envelope
from ..errors import Rejected
from ..hlc import DEFAULT_MAX_SKEW_MS, wall_ms
from .config import SessionConfig
from .events import ClockRefused, Event, HeldBack, Quarantined
from .forks import SessionForks
from .host import SyncHost
from .messages import MAX_VV_ENTRIES, ClockSkew, encode
from .messages import Quarantined as QuarantinedMsg
from .spaces import SpaceState, covers_below, ref, resolve


class SessionNotices:
    """QUARANTINED and CLOCK_SKEW notices of one session (see the module docstring).

    Args:
        host: the session's host.
        emit: reports an event of the session.
        forks: the session's fork state (a chain it holds a proof of may be refused).
        config: the session's limits and timeouts.
    """

    def __init__(self, host: SyncHost, emit: Callable[[Event], None], forks: SessionForks,
                 config: SessionConfig) -> None:
        self._host = host
        self._emit = emit
        self._forks = forks
        self._config = config
        # The receiver's wall clock and allowed skew (docs/PROTOCOL.md, "Clocks"): a host
        # may provide them (a replica: its own clock); else the system clock and 24 h.
        self._wall: Callable[[], int] = getattr(host, "wall_ms", wall_ms)
        self._max_skew_ms: int = getattr(host, "max_clock_skew_ms", DEFAULT_MAX_SKEW_MS)

    def wall(self) -> int:
        """This side's wall clock, in ms."""
        return self._wall()

    def hold_back(self, st: SpaceState, author: str, seq: int, hlc: int, wire: bytes, wall: int,
                  notices: list[bytes]) -> bool:
        """Whether to hold back this envelope (its predecessor is here or in the frame): its
        HLC is further ahead of this side's wall clock than allowed. A CLOCK_SKEW notice is
        added for it. Only a genuine new envelope is held back: one whose signature fails
        goes on to the host, which refuses it; one held here already is a duplicate."""
        first = st.holding.get(author)
        ahead_ms = clocks.ahead(hlc, wall, self._max_skew_ms)
        if ahead_ms and seq > self._host.version_vector(st.name).get(author, 0):
            try:
                open_envelope(wire)
            except Rejected:
                ahead_ms = 0
        else:
            ahead_ms = 0
        if not ahead_ms:
            if first is not None:
                del st.holding[author]  # the held one again, and no longer ahead: taken
            return False
        if first is None and len(st.holding) >= MAX_VV_ENTRIES:
            return True  # (bounded: more chains held back than any HAVE names are gaps)
        if first != seq:
            self._emit(HeldBack(st.name, author, seq, ahead_ms))
        st.holding[author] = seq
        notices.append(encode(ClockSkew(st.mine, ref(st, author), seq, ahead_ms)))
        return True

    def quarantine_notices(self, st: SpaceState, told: dict[str, tuple[int, str, str]]) -> list[bytes]:
        """QUARANTINED notices for the authors set aside on receipt: ``told`` maps each to
        its from-seq, reason and detail."""
        out = []
        for author, (from_seq, reason, detail) in sorted(told.items()):
            st.quarantined[author] = min(from_seq, st.quarantined.get(author, from_seq))
            out.append(encode(QuarantinedMsg(st.mine, ref(st, author), from_seq, reason, detail)))
        return out

    def on_clock_skew(self, st: SpaceState, msg: ClockSkew, now: float, peer: str) -> bool:
        """The peer held back an envelope of ours; False if the notice says nothing."""
        author = resolve(st, msg.author)
        # Only what this side sent and the peer lacks: anything else says nothing.
        if not st.acked.get(author, 0) < msg.seq <= self._host.version_vector(st.name).get(author, 0):
            return False
        # Sent again once the peer's clock may have caught up (at the soonest a resend interval on).
        if st.peer_holds(author, msg.seq, now + max(msg.ahead_ms / 1000, self._config.resend_interval)):
            self._emit(ClockRefused(st.name, author, msg.seq, msg.ahead_ms))
            record = getattr(self._host, "record_clock_refusal", None)
            if record is not None:
                record(peer, st.name, author, msg.seq, msg.ahead_ms)
        st.inflight = [b for b in st.inflight if not covers_below(st.acked, b.top, st.held)]
        return True

    def on_quarantined(self, st: SpaceState, msg: QuarantinedMsg, peer: str) -> bool:
        """The peer set an author aside; False if there is nothing to stop."""
        author = resolve(st, msg.author)
        if author in st.refused and st.refused[author] <= msg.from_seq:
            return False  # told before (a notice per frame of that chain it received)
        # Not a chain this side sends (nor one it holds a fork proof of): nothing to stop,
        # nothing to keep per name.
        forked = self._forks.points.get(st.name, {})
        if author not in self._host.version_vector(st.name) and author not in forked:
            return False
        st.refuse(author, msg.from_seq)
        self._host.peer_refused(peer, st.name, author, msg.from_seq, msg.reason, msg.detail)
        self._emit(Quarantined(st.name, author, msg.from_seq, msg.reason, msg.detail, by_peer=True))
        return True
