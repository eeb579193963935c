"""Snapshots in a session (protocol version 4; docs/PROTOCOL.md, "Snapshots in sessions").

A sender offers its snapshot of a space (:class:`~crdt_sync.protocol.host.SnapshotOffer`) when
the rule of :func:`wanted` says so, sends the transfer in SNAPSHOT chunks within a window and
waits for the receiver's verdict (SNAPSHOT_ACK) before it sends that space's envelopes (the
tail then starts at the covered vector; after a refusal, at the peer's HAVE). A receiver
reassembles one transfer at a time and hands it whole to its host, which checks it.
:class:`SessionSnapshots` does both for one session; the session owns the per-space state it
updates (:class:`SpaceState`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..identity import device_id
from .config import SessionConfig
from .events import Event, SnapshotVerdict
from .host import SnapshotOffer, SyncHost
from .messages import (
    E_LIMIT,
    E_UNEXPECTED,
    MAX_INNER_FRAME,
    SNAPSHOT_VERSION,
    ProtocolViolation,
    SnapshotAck,
    SnapshotChunk,
    encode,
)
from .spaces import SpaceState, covers, merge, public_key

#: The verdicts that are not refusals.
APPLIED, STORED, KNOWN = "applied", "stored", "known"
#: A receiver whose host takes no snapshots says this.
UNSUPPORTED = "snapshot-unsupported"
#: Room a SNAPSHOT frame's head and bases take beside its chunk (each base: key and seq).
_HEAD_ROOM, _BASE_ROOM = 128, 48
#: Transfers one session takes at most (each is checked whole: a peer cannot make this side
#: check transfers without end).
MAX_TRANSFERS = 64


def wanted(offer: SnapshotOffer, peer_have: dict[str, int], lag: int) -> bool:
    """Whether a peer whose HAVE is ``peer_have`` is sent ``offer`` to start from: it lacks
    a chain below one of this side's chain bases (this side cannot send that history); or it
    lacks envelopes the snapshot covers and holds none of the chains it covers (a new device:
    its own redemption does not count), or lacks at least ``lag`` of them."""
    if offer.to_relay:
        return False
    if any(peer_have.get(a, 0) < s for a, s in offer.bases.items()):
        return True
    behind = sum(max(0, s - peer_have.get(a, 0)) for a, s in offer.covered.items())
    fresh = not any(peer_have.get(a, 0) for a in offer.covered)
    return behind > 0 and (fresh or behind >= lag)


@dataclass
class _Out:
    """A transfer being sent: ``sent`` and ``acked`` are byte offsets."""

    offer: SnapshotOffer
    data: bytes
    blocking: bool  # the peer starts from it: its envelopes wait for the verdict
    bases: list[tuple[bytes, int]]
    sent: int = 0
    acked: int = 0
    heard: bool = False  # a SNAPSHOT_ACK came: the window opens past the first chunk
    sent_at: float = 0.0
    #: it may be sent (a push: once the relay holds what it covers, and so lets the pusher
    #: in, or once nothing of the space is in flight: the relay then answers why not)
    ready: bool = True


@dataclass
class _In:
    """A transfer being received."""

    space: str
    id: bytes
    total: int
    bases: list[tuple[bytes, int]]
    buf: bytearray = field(default_factory=bytearray)


class SessionSnapshots:
    """SNAPSHOT and SNAPSHOT_ACK of one session (see the module docstring)."""

    def __init__(self, host: SyncHost, config: SessionConfig, emit: Callable[[Event], None]) -> None:
        self._host = host
        self._config = config
        self._emit = emit
        self._offer_of: Callable[[str], SnapshotOffer | None] | None = getattr(host, "snapshot_offer", None)
        self._reads: Callable[[str], bool] | None = getattr(host, "reads", None)
        #: the session's version allows snapshots (set on the peer's HELLO)
        self.enabled = False
        self._decided: set[str] = set()  # spaces whose offer was settled
        self._out: dict[str, _Out] = {}
        self._in: _In | None = None  # one transfer at a time (a new one replaces it)
        self._done: dict[tuple[str, bytes], tuple[str, str]] = {}  # verdicts given, by (space, id)

    # -- sending -------------------------------------------------------------------------------
    def blocking(self, st: SpaceState) -> bool:
        """Whether ``st``'s envelopes wait for a verdict (or for the offer to be settled)."""
        out = self._out.get(st.name)
        return out is not None and out.blocking

    def busy(self, st: SpaceState) -> bool:
        """A transfer of ``st`` is unfinished either way (the space is not synced)."""
        return st.name in self._out or (self._in is not None and self._in.space == st.name)

    def pump(self, st: SpaceState, now: float, idle: bool = False) -> list[bytes]:
        """Settle the offer of ``st`` (its peer's HAVE came) and send what the window allows;
        ``idle``: no envelopes of ``st`` are in flight (a push waits for that, or for the
        peer to acknowledge what the snapshot covers)."""
        if st.their_table is None:
            return []
        if st.name not in self._decided:
            self._decide(st)
        out = self._out.get(st.name)
        if out is None:
            return []
        if not out.ready and (idle or covers(st.acked, out.offer.covered)):
            out.ready = True
        return self._chunks(st, out, now)

    def _decide(self, st: SpaceState) -> None:
        offer = None if self._offer_of is None else self._offer_of(st.name)
        if offer is None:
            if self._reads is None or self._reads(st.name):
                self._decided.add(st.name)  # (a peer that may not read yet may be let in later)
            return
        self._decided.add(st.name)
        below = {a: s for a, s in offer.bases.items() if st.peer_have.get(a, 0) < s}
        if self.enabled and wanted(offer, st.peer_have, self._config.snapshot_lag):
            bases = [(public_key(a), s) for a, s in sorted(below.items())]
            self._out[st.name] = _Out(offer, offer.load(), True, bases)
        elif self.enabled and offer.push:
            # Once the relay holds what the snapshot covers, or nothing more of ours is in
            # flight (the session does not end meanwhile: the transfer is unfinished).
            self._out[st.name] = _Out(offer, offer.load(), False, [], ready=False)
            self._cannot_serve(st, below)
        else:
            self._cannot_serve(st, below)

    def _cannot_serve(self, st: SpaceState, below: dict[str, int]) -> None:
        """The chains this side holds only from a base above the peer's HAVE: not sent (they
        would not chain on), and not waited for."""
        for author in below:
            st.refuse(author, st.peer_have.get(author, 0) + 1)

    def _chunks(self, st: SpaceState, out: _Out, now: float) -> list[bytes]:
        cfg = self._config
        size = min(cfg.batch_bytes, MAX_INNER_FRAME - _HEAD_ROOM - _BASE_ROOM * len(out.bases))
        if not out.ready:
            return []
        limit = out.acked + size * cfg.window if out.heard else 1
        frames = []
        total = len(out.data)
        while out.sent < total and out.sent < limit:
            chunk = out.data[out.sent:out.sent + size]
            frames.append(encode(SnapshotChunk(st.mine, out.offer.id, total, out.sent, chunk, out.bases)))
            out.sent += len(chunk)
            out.sent_at = now
        return frames

    def on_ack(self, st: SpaceState, msg: SnapshotAck, now: float) -> None:
        """The peer's SNAPSHOT_ACK: the window moves on; a verdict ends the transfer (the
        session then pumps the space: more chunks, or its envelopes)."""
        self._check_version()
        out = self._out.get(st.name)
        if out is None or msg.id != out.offer.id:
            return  # an answer to a transfer ended before: nothing to do
        out.heard = True
        out.acked = max(out.acked, min(msg.received, len(out.data)))
        out.sent_at = now
        if not msg.verdict:
            return
        del self._out[st.name]
        self._emit(SnapshotVerdict(st.name, out.offer.id, msg.verdict, msg.detail, True, len(out.data)))
        answered = getattr(self._host, "snapshot_answered", None)
        if answered is not None:
            answered(st.name, out.offer.id, msg.verdict)
        if out.blocking:
            if msg.verdict == APPLIED:  # the peer holds what it covers: the tail starts there
                merge(st.sent, out.offer.covered)
                merge(st.acked, out.offer.covered)
            else:  # the history from its HAVE, but what lies below this side's bases
                self._cannot_serve(st, {device_id(k): s for k, s in out.bases})

    # -- receiving -----------------------------------------------------------------------------
    def on_chunk(self, st: SpaceState, msg: SnapshotChunk, source: str) -> list[bytes]:
        """A chunk from the peer: kept in order; the whole transfer goes to the host."""
        self._check_version()
        done = self._done.get((st.name, msg.id))
        if done is not None:
            return [self._ack(st, msg.id, msg.total, *done)]
        inc = self._in
        if inc is None or inc.id != msg.id or inc.space != st.name or inc.total != msg.total:
            if len(self._done) >= MAX_TRANSFERS:
                raise ProtocolViolation(E_LIMIT, f"more than {MAX_TRANSFERS} snapshot transfers in a session")
            inc = self._in = _In(st.name, msg.id, msg.total, list(msg.bases))
            early = self._accepts(st.name, msg.id, msg.total)
            if early is not None:
                return [self._finish(st, inc, early)]
        if msg.offset == len(inc.buf):
            inc.buf += msg.chunk
        if len(inc.buf) < inc.total:
            return [self._ack(st, msg.id, len(inc.buf), "", "")]
        received = getattr(self._host, "snapshot_received", None)
        assert received is not None  # (_accepts refused the transfer otherwise)
        return [self._finish(st, inc, received(st.name, bytes(inc.buf), source))]

    def _accepts(self, space: str, id: bytes, total: int) -> tuple[str, str] | None:
        accepts = getattr(self._host, "snapshot_accepts", None)
        if accepts is None:
            return UNSUPPORTED, "this side takes no snapshots"
        verdict: tuple[str, str] | None = accepts(space, id, total)
        return verdict

    def _finish(self, st: SpaceState, inc: _In, verdict: tuple[str, str]) -> bytes:
        self._in = None
        self._done[(st.name, inc.id)] = verdict
        reason, detail = verdict
        self._emit(SnapshotVerdict(st.name, inc.id, reason, detail, False, len(inc.buf)))
        if reason not in (APPLIED, STORED, KNOWN):
            vv = self._host.version_vector(st.name)
            for key, seq in inc.bases:  # the peer cannot give these: do not wait for them
                author = device_id(key)
                if vv.get(author, 0) < seq:
                    st.unserved[author] = vv.get(author, 0) + 1
        return self._ack(st, inc.id, inc.total, reason, detail)

    def _ack(self, st: SpaceState, id: bytes, received: int, verdict: str, detail: str) -> bytes:
        return encode(SnapshotAck(st.mine, id, received, verdict, detail))

    def _check_version(self) -> None:
        if not self.enabled:
            raise ProtocolViolation(E_UNEXPECTED, f"SNAPSHOT frames need protocol version {SNAPSHOT_VERSION}")

    # -- timers --------------------------------------------------------------------------------
    def tick(self, st: SpaceState, now: float) -> list[bytes]:
        """No answer within ``ack_timeout``: send again from what the peer acknowledged."""
        out = self._out.get(st.name)
        if out is None or not _waiting(out) or now - out.sent_at < self._config.ack_timeout:
            return []
        out.sent = out.acked
        return self._chunks(st, out, now)

    def deadlines(self) -> list[float]:
        return [o.sent_at + self._config.ack_timeout for o in self._out.values() if _waiting(o)]


def _waiting(out: _Out) -> bool:
    """Something of ``out`` is sent and not acknowledged (or its first chunk is unanswered)."""
    return out.sent > out.acked or not out.heard


__all__ = ["APPLIED", "KNOWN", "STORED", "UNSUPPORTED", "SessionSnapshots", "wanted"]
