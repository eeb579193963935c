"""The sync session: a sans-I/O state machine shared by every transport.

Frames go in (:meth:`Session.receive`), frames come out; time is passed in; the host (a
:class:`~crdt_sync.Replica`) is called synchronously for SQLite work. No sockets, no event
loop, no sleeping: a driver (``transports.driver``) moves the frames and calls
:meth:`Session.tick` at :meth:`Session.next_deadline`. Every protocol decision is made
here, including the ones the driver asks about: when a one-shot session is done
(:meth:`Session.end_if_synced`), how it ends when the link closes or a time limit passes,
and which frames must wait for the host's commit (:meth:`Session.commit_order`).

The rest of the package: ``messages``, ``events``, ``host`` (what it needs of the replica or
relay), ``spaces`` (per-space state), ``config``, and the session's helpers: ``handshake``,
``batches`` (sending), ``incoming`` (sorting what arrives), ``notices`` (QUARANTINED,
CLOCK_SKEW), ``forks``, ``snapshots``, ``ordering``.

Frames after HELLO are sealed and opened here (protocol 3: ``channel``, ``link``), so every
transport is encrypted; a driver may take them in the clear and seal each as it leaves
(:meth:`Session.defer_sealing`).

Reliability over lossy links: each side sends envelope batches within a window and keeps
no copies, only ``sent`` and ``acked``; an ACK that does not cover a batch it acknowledges,
or none within ``ack_timeout``, rewinds ``sent`` to ``acked`` and the store is read again
(go-back-N). A receiver skips envelopes whose predecessor has not arrived. So a lost,
duplicated or reordered frame costs a resend, never an inconsistency.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import Rejected, StoreError
from ..identity import device_id, verify
from .batches import Sender
from .channel import Channel
from .config import RELIABLE_LINK, SessionConfig
from .events import Authenticated, ClockRefused, Closed, Event, HeldBack, Quarantined, Received, SpaceSynced
from .forks import SessionForks
from .handshake import AUTH_CONTEXT, TRANSCRIPT_CONTEXT, blind, negotiate, relay_spaces, transcript
from .host import StreamingHost, SyncHost
from .incoming import sort_incoming
from .link import Link
from .messages import (
    E_AUTH_FAILED,
    E_GOING_AWAY,
    E_INTERNAL,
    E_LIMIT,
    E_NORMAL,
    E_REJECTED,
    E_TIMEOUT,
    E_UNEXPECTED,
    MAX_VERSION,
    MIN_VERSION,
    SNAPSHOT_VERSION,
    Ack,
    Bye,
    ClockSkew,
    Envelopes,
    Error,
    ForkProof,
    Have,
    Hello,
    Message,
    Ping,
    Pong,
    ProtocolViolation,
    SnapshotAck,
    SnapshotChunk,
    Spaces,
    decode,
    encode,
    error_name,
)
from .messages import Auth as AuthMsg
from .messages import Quarantined as QuarantinedMsg
from .notices import SessionNotices
from .ordering import CommitOrder, commit_order
from .snapshots import SessionSnapshots
from .spaces import SpaceState, clamp, covers, merge, refs, resolve

__all__ = ["AUTH_CONTEXT", "RELIABLE_LINK", "TRANSCRIPT_CONTEXT", "Authenticated", "ClockRefused", "Closed",
           "CommitOrder", "Event", "HeldBack", "Quarantined", "Received", "Session", "SessionConfig",
           "SpaceSynced", "StreamingHost", "SyncHost"]


class Session:
    """One sync session with one peer (see the module docstring).

    Args:
        host: the replica.
        now: the current time in seconds (any monotonic clock, used consistently).
        config: limits and timeouts.
        nonce: this side's HELLO nonce (tests pin it; random otherwise).
        ephemeral: this side's X25519 secret for the link (tests pin it; random otherwise).
    """

    def __init__(self, host: SyncHost, now: float, config: SessionConfig | None = None,
                 nonce: bytes | None = None, spaces: list[str] | None = None,
                 ephemeral: bytes | None = None) -> None:
        self.host = host
        self._only = None if spaces is None else set(spaces)
        self.config = config or SessionConfig()
        self.nonce = nonce or os.urandom(32)
        self.events: list[Event] = []
        self.peer: str | None = None
        self.version: int | None = None
        self.closed: Closed | None = None
        self.authenticated = False
        self.bytes_in = self.bytes_out = 0
        self.envelopes_in = 0  # applied here (envelopes_out: sent to the peer)
        self._relay = host.keeps_all_spaces
        caps: dict[str, object] = {"relay": True} if self._relay else {}
        # the encrypted link and the frames that come early (protocol/channel.py, link.py)
        self._channel = Channel(ephemeral, self.config.max_early_frames)
        self._hello = encode(Hello(MIN_VERSION, MAX_VERSION, self._channel.public, self.nonce, caps))
        self._peer_is_relay = False
        self._peer_hello: Hello | None = None
        self._transcript = b""
        self._pending_spaces: Spaces | None = None
        self._my_spaces: list[str] = []
        self._spaces: dict[str, SpaceState] = {}
        self._by_theirs: dict[int, SpaceState] = {}
        self._spaces_known = False
        self._started = self._last_rx = self._last_tx = self._hello_sent = now
        self._ping = 0
        self._handshake_reply: list[bytes] = []
        #: called with the shared spaces once they are known (a relay subscribes to them)
        self.on_shared: Callable[[list[str]], None] | None = None
        self._peer_left = False  # it said BYE or ERROR
        self._forks = SessionForks(host)  # head hashes and fork proofs (protocol/forks.py)
        #: whether the peer may be served a space now (a host that gates by read rights)
        self._reads: Callable[[str], bool] | None = getattr(host, "reads", None)
        self._sender = Sender(host, self.config, self._forks)  # envelope batches (protocol/batches.py)
        # QUARANTINED and CLOCK_SKEW notices, made and taken (protocol/notices.py)
        self._notices = SessionNotices(host, self._emit, self._forks, self.config)
        # SNAPSHOT and SNAPSHOT_ACK, sent and taken (protocol/snapshots.py; version 4)
        self._snapshots = SessionSnapshots(host, self.config, self._emit)

    # -- the driver's interface ---------------------------------------------------------------
    def defer_sealing(self) -> None:
        """From now on frames come out in the clear and the caller passes each through
        :meth:`seal` as it sends it (in the order it sends them). A driver that holds some
        frames back (the commit gate) and looks at them (a relay's pacing) does this before
        :meth:`start`; counters then grow in the order frames leave."""
        if self.bytes_out:
            raise RuntimeError("defer_sealing() must come before start()")
        self._channel.deferred = True

    def seal(self, frame: bytes) -> bytes:
        """A frame this session made (after :meth:`defer_sealing`), as it goes on the wire:
        SEALED once the link is up, HELLO (and an ERROR before any HELLO) in the clear."""
        sealed = self._channel.seal(frame)
        self.bytes_out += len(sealed) - len(frame)
        return sealed

    @property
    def link(self) -> Link | None:
        """The encrypted link, once the peer's HELLO came (tests tap it: ``link.inspect``)."""
        return self._channel.link

    @property
    def replays(self) -> int:
        """SEALED frames dropped because their counter was seen before (or is too old)."""
        link = self._channel.link
        return link.replays if link is not None else 0

    def start(self) -> list[bytes]:
        """The first frames to send (HELLO)."""
        return self._out([self._hello], self._started)

    def receive(self, frame: bytes, now: float) -> list[bytes]:
        """Handle one frame from the peer; returns the frames to send."""
        if self.closed:
            return []
        self._last_rx = now
        self.bytes_in += len(frame)
        try:
            inner = self._channel.incoming(frame, self.authenticated)
            if inner is None:
                return []  # a replay, or dropped as early (see channel.py)
            msg = decode(inner)
            return self._out(self._handle(msg, inner, now), now)
        except ProtocolViolation as exc:
            return self._fail(exc.code, str(exc), now)
        except Rejected as exc:
            return self._fail(E_REJECTED, f"{exc.reason}: {exc.detail}", now)
        except StoreError as exc:
            return self._store_failed(exc, now)

    def _store_failed(self, exc: StoreError, now: float) -> list[bytes]:
        """The host's store failed under a read or a write (a full disk, a database that does
        not answer): ERROR 11, which tells the peer to keep what it has and retry later."""
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return self._fail(E_LIMIT, f"this side cannot use its store now ({why}): retry later", now)

    def tick(self, now: float) -> list[bytes]:
        """Timers: handshake deadline, resends, pings, a dead peer."""
        try:
            return self._tick(now)
        except StoreError as exc:
            return self._store_failed(exc, now)

    def _tick(self, now: float) -> list[bytes]:
        if self.closed:
            return []
        cfg = self.config
        if not self.authenticated and now - self._started >= cfg.handshake_timeout:
            return self._fail(E_TIMEOUT, "handshake did not complete in time", now)
        if now - self._last_rx >= cfg.dead_after:
            return self._fail(E_TIMEOUT, f"nothing heard from the peer for {cfg.dead_after:g} s", now)
        out: list[bytes] = []
        if not self._spaces_known and now - self._hello_sent >= cfg.resend_interval:
            self._hello_sent = now  # HELLO, AUTH or SPACES may have been lost: ask again
            out.append(self._hello)
        for st in self._spaces.values():
            if not st.peer_saw_have and now - st.have_sent_at >= cfg.resend_interval:
                st.have_sent_at = now
                out.append(st.have_frame)
            if st.inflight and now - st.inflight[0].sent_at >= cfg.ack_timeout:
                st.go_back()
                out += self._pump(st, now)
            out += self._forks.tick(st, now, cfg.resend_interval) + self._snapshots.tick(st, now)
            if st.retry_at and st.release(now):  # the peer's clock may have caught up
                out += self._pump(st, now)
            if st.ack_due and now >= st.ack_due:
                out += self._flush_ack(st)
        if self.authenticated and now - self._last_tx >= cfg.ping_interval:
            self._ping += 1
            out.append(encode(Ping(self._ping)))
        return self._out(out, now)

    def local_changed(self, now: float) -> list[bytes]:
        """The host has new envelopes (local edits, or received from another peer): push them."""
        if self.closed or not self.authenticated:
            return []
        out: list[bytes] = []
        try:
            for st in self._spaces.values():
                if st.their_table is not None:
                    out += self._forks.send_proofs(st) + self._pump(st, now)
        except StoreError as exc:
            return self._store_failed(exc, now)
        return self._out(out, now)

    def end_if_synced(self, now: float) -> list[bytes] | None:
        """A one-shot session's end: once synced, the frames that close it normally (see
        :meth:`close`); None while there is still something to sync."""
        if self.closed or not self.synced:
            return None
        return self.close(now, E_NORMAL)

    def going_away(self, now: float) -> list[bytes]:
        """This side stops (a live session told to): say BYE going-away."""
        return self.close(now, E_GOING_AWAY)

    def link_lost(self, why: str = "the link closed") -> None:
        """The link closed under the session: it ends, and there is no one to tell."""
        self._end(Closed(E_GOING_AWAY, why, by_peer=True, link_lost=True))

    def expire(self, limit: float) -> None:
        """The driver's time limit for a one-shot session passed: end without a frame (the
        peer notices the closed link)."""
        self._end(Closed(E_TIMEOUT, f"not synced after {limit:g} s", by_peer=False))

    @property
    def peer_listening(self) -> bool:
        """False once the peer said BYE or ERROR: it reads nothing more, so frames still
        waiting for the host (see :class:`CommitOrder`) need not be sent."""
        return not self._peer_left

    def commit_order(self, frame: bytes) -> CommitOrder:
        """When ``frame`` (one this session made) may leave relative to the host's commit."""
        return commit_order(frame)

    def close(self, now: float, code: int = E_NORMAL) -> list[bytes]:
        """Say BYE and stop."""
        if self.closed:
            return []
        self._end(Closed(code, error_name(code), by_peer=False))
        # A last ACK per space lets the peer see that it is synced too, should our ACK of
        # its last batch have been lost.
        acks = [encode(Ack(st.mine, 0, refs(st, self.host.version_vector(st.name))))
                for st in self._spaces.values() if st.their_table is not None]
        return self._out([*acks, encode(Bye(code))], now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do."""
        if self.closed:
            return None
        cfg = self.config
        times = [self._last_rx + cfg.dead_after]
        if not self.authenticated:
            times.append(self._started + cfg.handshake_timeout)
        else:
            times.append(self._last_tx + cfg.ping_interval)
        if not self._spaces_known:
            times.append(self._hello_sent + cfg.resend_interval)
        times += [st.have_sent_at + cfg.resend_interval for st in self._spaces.values()
                  if not st.peer_saw_have]
        times += [st.inflight[0].sent_at + cfg.ack_timeout for st in self._spaces.values() if st.inflight]
        times += [t for st in self._spaces.values() for t in st.retry_at.values()]
        times += [st.ack_due for st in self._spaces.values() if st.ack_due]
        times += self._snapshots.deadlines()
        return min(times)

    @property
    def envelopes_out(self) -> int:
        """Envelopes sent to the peer."""
        return self._sender.sent

    @property
    def envelopes_acked(self) -> int:
        """Envelopes sent that the peer acknowledged holding (in batches its ACKs cover)."""
        return self._sender.acked

    def pop_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    @property
    def synced(self) -> bool:
        """Both sides hold everything the other had, for every shared space."""
        return self._spaces_known and all(st.synced for st in self._spaces.values())

    def expected(self) -> int:
        """Envelopes this session expects to move both ways (known once HAVEs crossed)."""
        return sum(st.expect_in + st.expect_out for st in self._spaces.values())

    def shared_spaces(self) -> list[str]:
        return sorted(self._spaces)

    # -- handling ------------------------------------------------------------------------------
    def _out(self, frames: list[bytes], now: float) -> list[bytes]:
        if frames:
            self._last_tx = now
            frames = self._channel.outgoing(frames)
            self.bytes_out += sum(map(len, frames))
        return frames

    def _emit(self, event: Event) -> None:
        self.events.append(event)

    def _end(self, closed: Closed) -> None:
        if self.closed is None:
            self.closed = closed
            self.events.append(closed)

    def _fail(self, code: int, message: str, now: float) -> list[bytes]:
        self._end(Closed(code, message, by_peer=False))
        return self._out([encode(Error(code, message))], now)

    def _handle(self, msg: Message, frame: bytes, now: float) -> list[bytes]:
        match msg:
            case Hello():
                return self._on_hello(msg, frame)
            case AuthMsg():
                return self._on_auth(msg, now)
            case Error():
                self._peer_left = True
                self._end(Closed(msg.code, msg.message, by_peer=True))
                return []
            case Bye():
                self._peer_left = True
                self._end(Closed(msg.code, error_name(msg.code), by_peer=True))
                return []
            case Ping():
                return [encode(Pong(msg.token))]
            case Pong():
                return []
        if self._peer_hello is None or (not self.authenticated and not isinstance(msg, Spaces)):
            return self._early_frame(type(msg).__name__.upper())
        if isinstance(msg, Spaces):
            self._pending_spaces = msg
            return self._on_spaces(now) if self.authenticated else []
        match msg:
            case Have():
                return self._on_have(msg, now)
            case Envelopes():
                return self._on_envelopes(msg, now)
            case Ack():
                return self._on_ack(msg, now)
            case ForkProof():
                st = self._space(msg.space)
                if st is None:
                    return []
                out = self._forks.on_message(st, msg, f"peer {self.peer}")
                self._check_synced(st)  # a proof the session waited for may have come
                return out
            case QuarantinedMsg() | ClockSkew():
                return self._on_notice(msg, now)
            case SnapshotChunk() | SnapshotAck():
                return self._on_snapshot(msg, now)
        raise ProtocolViolation(E_INTERNAL, f"unhandled {type(msg).__name__}")

    def _early_frame(self, name: str) -> list[bytes]:
        self._channel.early(name, "HELLO" if self._peer_hello is None else "AUTH")
        return []

    def _on_hello(self, msg: Hello, frame: bytes) -> list[bytes]:
        if self._peer_hello is not None:
            if frame == encode(self._peer_hello):
                return list(self._handshake_reply)  # it resent HELLO: ours may have been lost
            raise ProtocolViolation(E_UNEXPECTED, "a second, different HELLO")
        version = negotiate(msg)
        if msg.ephemeral_key == self._channel.public:
            raise ProtocolViolation(E_AUTH_FAILED, "peer's HELLO carries this session's own ephemeral key "
                                    "(a reflected HELLO)")
        self._transcript = transcript(self._hello, frame)
        self._channel.establish(msg.ephemeral_key, self._transcript, self._hello, frame)
        self._peer_hello = msg
        self.version = version
        self._snapshots.enabled = version >= SNAPSHOT_VERSION
        identity = self.host.identity
        proof = identity.sign(AUTH_CONTEXT + self._transcript + msg.nonce)
        self._handshake_reply = [encode(AuthMsg(identity.public_key, proof))]
        self._peer_is_relay = msg.capabilities.get("relay") is True
        if not self._relay:  # a relay answers with the names the device asked for
            self._my_spaces = [s for s in self.host.sync_spaces() if self._only is None or s in self._only]
            self._handshake_reply.append(encode(Spaces(self._space_ids(self._my_spaces))))
        return list(self._handshake_reply)

    def _space_ids(self, names: list[str]) -> list[bytes | str]:
        # A relay stores envelopes, which name their space anyway: it gets the names.
        return list(names) if self._peer_is_relay else [blind(n, self._transcript) for n in names]

    def _on_auth(self, msg: AuthMsg, now: float) -> list[bytes]:
        if self._peer_hello is None:
            return self._early_frame("AUTH")
        if self.authenticated:
            return []  # duplicate
        if msg.device_key == self.host.identity.public_key:
            raise ProtocolViolation(E_AUTH_FAILED, "peer claims this device's own key")
        if not verify(msg.device_key, AUTH_CONTEXT + self._transcript + self.nonce, msg.signature):
            raise ProtocolViolation(E_AUTH_FAILED, "peer did not prove it holds the key of "
                                    f"{device_id(msg.device_key)}")
        self.peer = device_id(msg.device_key)
        assert self.version is not None
        refused = self.host.admit(self.peer, self._peer_is_relay)
        if refused is not None:
            raise ProtocolViolation(E_AUTH_FAILED, refused)
        self.authenticated = True
        self.events.append(Authenticated(self.peer, self.version))
        return self._on_spaces(now) if self._pending_spaces is not None else []

    def _on_spaces(self, now: float) -> list[bytes]:
        if self._spaces_known:
            return []  # duplicate
        assert self._pending_spaces is not None
        out = []
        if self._relay:
            self._my_spaces = relay_spaces(self._pending_spaces)
            out.append(encode(Spaces(list(self._my_spaces))))
            self._handshake_reply.append(out[0])
        theirs = {b: i for i, b in enumerate(self._pending_spaces.blinded)}
        for mine, name in enumerate(self._my_spaces):
            plain = self._relay or self._peer_is_relay
            index = theirs.get(name if plain else blind(name, self._transcript))
            if index is None:
                continue
            vv = self.host.version_vector(name)
            st = SpaceState.opened(name, mine, index, vv, self._forks.heads(name, vv, sorted(vv)), now)
            st.quarantined = {a: q.from_seq for a, q in self.host.quarantined(name).items()}
            st.served = self._reads is None or self._reads(name)
            self._spaces[name] = st
            self._by_theirs[index] = st
            # Proofs before HAVE: a peer that finds itself synced on our HAVE may leave at once.
            out += self._forks.send_proofs(st)
            out.append(st.have_frame)
        self._spaces_known = True
        if self.on_shared is not None:
            self.on_shared(sorted(self._spaces))
        return out

    def _space(self, index: int) -> SpaceState | None:
        return self._by_theirs.get(index)

    def _on_have(self, msg: Have, now: float) -> list[bytes]:
        st = self._space(msg.space)
        if st is None:
            return []  # a space we do not share: ignore
        first = st.their_table is None
        table = [device_id(r) if isinstance(r, bytes) else None for r, _ in msg.vv]
        if any(a is None for a in table):
            raise ProtocolViolation(E_UNEXPECTED, "HAVE must name authors by key")
        vv = {a: s for a, (_, s) in zip(table, msg.vv, strict=True) if a is not None}
        if first:
            st.their_table = [a for a in table if a is not None]
            st.peer_have = dict(vv)
            st.sent = dict(vv)
            mine = self.host.version_vector(st.name)
            st.expect_in = sum(max(0, s - mine.get(a, 0)) for a, s in vv.items())
            st.expect_out = sum(max(0, s - vv.get(a, 0)) for a, s in mine.items())
        elif any(s > st.peer_have.get(a, 0) for a, s in vv.items()):  # a renewed HAVE
            mine = self.host.version_vector(st.name)
            st.expect_in += sum(max(0, s - max(mine.get(a, 0), st.peer_have.get(a, 0)))
                                for a, s in vv.items())
            merge(st.peer_have, vv)
        merge(st.acked, vv)
        self.host.record_ack(self._peer_id(), st.name, st.acked)
        forked = self._forks.on_have(st, vv, table, msg.heads) if first else []
        # ACK of batch 0 tells the peer its HAVE arrived (else it resends it).
        mine = self.host.version_vector(st.name)
        # Proofs first: once it has our ACK the peer may count the space synced and leave.
        out = [*forked, encode(Ack(st.mine, 0, refs(st, mine))), *self._pump(st, now)]
        self._check_synced(st)
        return out

    def _on_envelopes(self, msg: Envelopes, now: float) -> list[bytes]:
        st = self._space(msg.space)
        if st is None or st.their_table is None:
            return []  # not shared, or its HAVE was lost: the sender will resend both
        live = st.synced  # synced before this frame: a live push, whose ACK may wait
        batch = sort_incoming(st, msg.envelopes, self.host, self._notices)
        wires, theirs, told, aside_here, notices = (batch.wires, batch.theirs, batch.told, batch.aside_here,
                                                   batch.notices)
        got = self.host.accept(wires, f"peer {self.peer}", st.name)
        applied, dups, gaps = got.applied, got.duplicates, got.gaps
        skipped = aside_here + got.skipped
        for q in got.quarantined:
            told[q.author] = (q.from_seq, q.reason, q.detail)
            self.events.append(Quarantined(st.name, q.author, q.from_seq, q.reason, q.detail,
                                           by_peer=False))
        self.envelopes_in += applied
        # The peer has what it sent, so never send it back (contiguity holds: it sends in order).
        merge(st.sent, theirs)
        merge(st.acked, theirs)
        gaps += len(msg.envelopes) - len(wires) - aside_here
        if applied or dups or gaps or skipped:
            self.events.append(Received(st.name, applied, dups, gaps, skipped))
        out = self._notices.quarantine_notices(st, told)
        vv = self.host.version_vector(st.name)
        proofs = self._forks.after_envelopes(st, theirs)  # a fork found on receipt, or one it lacks
        for author in [a for a, s in st.holding.items() if vv.get(a, 0) >= s]:
            del st.holding[author]  # taken since (its clock caught up)
        self._check_synced(st)
        renewed = self._renew(st, now)  # its redemption or grant may have let the peer in
        return [*out, *notices, *proofs, *renewed, *self._ack(st, msg.batch, vv, now, live)]

    def _ack(self, st: SpaceState, batch: int, vv: dict[str, int], now: float, live: bool) -> list[bytes]:
        """The ACK of ``batch``: at once, or (a live push) with the next ones (``ack_delay``)."""
        cfg = self.config
        if cfg.ack_delay > 0 and live and not st.wait_ack(batch, now, cfg.ack_delay, cfg.ack_every):
            return []
        return [encode(Ack(st.mine, max(batch, st.take_ack() or 0), refs(st, vv)))]

    def _flush_ack(self, st: SpaceState) -> list[bytes]:
        batch = st.take_ack()
        vv = self.host.version_vector(st.name) if batch is not None else {}
        return [] if batch is None else [encode(Ack(st.mine, batch, refs(st, vv)))]

    def _on_notice(self, msg: QuarantinedMsg | ClockSkew, now: float) -> list[bytes]:
        st = self._space(msg.space)
        if st is None or st.their_table is None:
            return []
        if isinstance(msg, ClockSkew):
            changed = self._notices.on_clock_skew(st, msg, now, self._peer_id())
        else:
            changed = self._notices.on_quarantined(st, msg, self._peer_id())
        out = self._pump(st, now) if changed else []
        self._check_synced(st)
        return out

    def _on_ack(self, msg: Ack, now: float) -> list[bytes]:
        st = self._space(msg.space)
        if st is None or st.their_table is None:
            return []
        if msg.batch == 0 or not st.renewed:
            st.peer_saw_have = True
        table = st.their_table
        acked = st.acked
        for r, s in msg.vv:  # merge(st.acked, {_resolve(st, r): s}) inline: once per frame
            author = table[r] if type(r) is int and r < len(table) else resolve(st, r)
            if s > acked.get(author, 0):
                acked[author] = s
        self.host.record_ack(self._peer_id(), st.name, st.acked)
        self._sender.acknowledged(st, msg.batch, now)
        out = self._pump(st, now)
        self._check_synced(st)
        return out

    def _on_snapshot(self, msg: SnapshotChunk | SnapshotAck, now: float) -> list[bytes]:
        st = self._space(msg.space)
        if st is None or st.their_table is None:
            return []  # (its sender resends after ack_timeout)
        if isinstance(msg, SnapshotChunk):
            out = self._snapshots.on_chunk(st, msg, f"peer {self.peer}")
        else:  # more chunks, or after a verdict the space's envelopes
            self._snapshots.on_ack(st, msg, now)
            out = self._pump(st, now)
        self._check_synced(st)
        return out

    def _pump(self, st: SpaceState, now: float) -> list[bytes]:
        """A snapshot first (the space's envelopes wait while the peer starts from it)."""
        out = self._renew(st, now) + self._snapshots.pump(st, now)
        if self._snapshots.blocking(st):
            return out
        out += self._sender.pump(st, now)
        return out + self._snapshots.pump(st, now, idle=True) if not st.inflight else out

    def _renew(self, st: SpaceState, now: float) -> list[bytes]:
        """The peer was shown an empty space and may read it now: HAVE again, in full, so
        that it does not count the space synced against the empty one."""
        if st.served or self._reads is None or not self._reads(st.name):
            return []
        vv = self.host.version_vector(st.name)
        return [st.renew(vv, self._forks.heads(st.name, vv, sorted(vv)), now)]

    def _check_synced(self, st: SpaceState) -> None:
        synced = st.their_table is not None and not st.inflight and not self._snapshots.busy(st)
        if synced:
            # What either side set aside is not waited for: not the peer's chains beyond
            # what this side quarantined, not ours beyond what the peer refused.
            mine = self.host.version_vector(st.name)
            theirs = clamp(clamp(clamp(st.peer_have, st.quarantined), st.holding), st.unserved)
            synced = (covers(mine, theirs)
                      and covers(st.acked, self._forks.for_sync(st, clamp(clamp(mine, st.refused), st.held))))
        if synced and not st.synced:
            self.events.append(SpaceSynced(st.name))
        st.synced = synced

    def _peer_id(self) -> str:
        assert self.peer is not None
        return self.peer

