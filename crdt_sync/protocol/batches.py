"""The session's sending side: envelope batches within the window (the go-back-N notes in
``session``). :class:`Sender` reads what the peer lacks from the host and makes ENVELOPES
frames; the session owns the per-space state it records them in (:class:`SpaceState`)."""

from __future__ import annotations

from .config import SessionConfig
from .forks import SessionForks
from .host import SyncHost
from .messages import Envelopes, WireEnvelope, encode, encode_envelopes, envelope_item
from .spaces import Inflight, SpaceState, merge, ref


class Sender:
    """Sends one session's envelope batches; ``sent`` counts the envelopes sent."""

    def __init__(self, host: SyncHost, config: SessionConfig, forks: SessionForks) -> None:
        self._host = host
        self._config = config
        self._forks = forks
        self._outgoing = getattr(host, "outgoing", None)
        self.sent = 0

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
