"""The session's sending side: envelope batches within the window (the go-back-N notes in
``session``). :class:`Sender` reads what the peer lacks from the host and makes ENVELOPES
frames; the session owns the per-space state it records them in (:class:`SpaceState`)."""

from __future__ import annotations

from .config import SessionConfig
from .forks import SessionForks
from .host import SyncHost
from .messages import Envelopes, WireEnvelope, encode
from .prebuilt import encode_envelopes, envelope_item
from .spaces import Inflight, SpaceState, covers_below, merge, ref


class Sender:
    """Sends one session's envelope batches; ``sent`` counts the envelopes sent."""

    def __init__(self, host: SyncHost, config: SessionConfig, forks: SessionForks) -> None:
        self._host = host
        self._config = config
        self._forks = forks
        self._outgoing = getattr(host, "outgoing", None)
        self.sent = 0
        #: envelopes sent that the peer acknowledged holding (in batches its ACKs cover)
        self.acked = 0

    def acknowledged(self, st: SpaceState, batch: int, now: float) -> None:
        """The peer's ACK of ``batch`` (its version vector already merged into ``st.acked``):
        retire what it covers, go back when it does not cover a batch it acknowledges."""
        lost = progressed = False
        while st.inflight and st.inflight[0].batch <= batch:
            done = st.inflight.pop(0)
            progressed = True
            held = covers_below(st.acked, done.top, st.held)
            lost = lost or not held
            self.acked += done.count if held else 0
        # A later batch the peer already holds in full (a resend overtaken by the ACK of the
        # original) needs no ACK of its own: the peer may say BYE before it sends one.
        kept = [b for b in st.inflight if not covers_below(st.acked, b.top, st.held)]
        self.acked += sum(b.count for b in st.inflight) - sum(b.count for b in kept)
        st.inflight = kept
        if lost:
            st.go_back()
        elif progressed:
            # The peer is working through the window: time what is still in flight from now.
            # Timed from sending, a receiver slower than ack_timeout per window got it all again.
            for b in st.inflight:
                b.sent_at = now

    def pump(self, st: SpaceState, now: float) -> list[bytes]:
        """ENVELOPES frames of what the peer lacks, until the window is full."""
        if st.their_table is None:
            return []
        if self._outgoing is not None:
            return self._pump_encoded(st, now)
        out = []
        cfg = self._config
        while len(st.inflight) < cfg.window:
            envs = self._host.missing_envelopes(st.name, self._forks.covered(st, st.covered()),
                                                cfg.batch_count, cfg.batch_bytes)
            if not envs:
                break
            top: dict[str, int] = {}
            wire = []
            for env in envs:
                author = env.author
                top[author] = max(top.get(author, 0), env.seq)
                wire.append(WireEnvelope(ref(st, author), env.seq, env.hlc, env.payload,
                                         env.signature))
            merge(st.sent, top)
            self.sent += len(envs)
            st.inflight.append(Inflight(st.next_batch, top, now, len(envs)))
            out.append(encode(Envelopes(st.mine, st.next_batch, wire)))
            st.next_batch += 1
        return out

    def _pump_encoded(self, st: SpaceState, now: float) -> list[bytes]:
        # The same frames as pump, from a StreamingHost's pre-encoded envelopes.
        out = []
        cfg = self._config
        index = st.my_index
        outgoing = self._outgoing
        assert outgoing is not None
        while len(st.inflight) < cfg.window:
            items, st.cursor = outgoing(st.name, self._forks.covered(st, st.covered()), st.cursor,
                                        cfg.batch_count, cfg.batch_bytes)
            if not items:
                break
            top: dict[str, int] = {}
            parts = []
            for author, key, seq, _, tail in items:
                top[author] = seq  # causal order: an author's seqs only grow
                r = index.get(author)
                parts.append(envelope_item(key if r is None else r, tail))
            merge(st.sent, top)
            self.sent += len(items)
            st.inflight.append(Inflight(st.next_batch, top, now, len(items)))
            out.append(encode_envelopes(st.mine, st.next_batch, parts))
            st.next_batch += 1
        return out
