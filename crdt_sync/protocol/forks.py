"""The session's part in fork detection (docs/PROTOCOL.md, "Forks"; docs/DESIGN.md, "Forks").

HAVE carries, per author, the hash of the head it names. A receiver that holds that
author's envelope at that seq with another hash has found a fork, but a hash alone proves
nothing (a peer may lie): it sends its own envelope there in a FORK_PROOF, and stops sending
that author's envelopes to this peer for the session (they would not chain onto the peer's).
The peer, holding the other envelope, now has a proof: it keeps it (its host sets the author
aside) and answers with the proof (both envelopes), which the first side checks and keeps.

Every proof a host holds for a shared space is sent to the peer once per session (so proofs
reach every device that syncs, and the relay forwards them), and a proof whose two envelopes
name different predecessors makes whoever holds the author's envelope one seq lower send it
too, so the fork point is found however far down the chains parted.

Nothing here does I/O; the host verifies and keeps proofs (:class:`ForkHost`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from hashlib import blake2b
from typing import Protocol, runtime_checkable

import cbor2

from ..envelope import Envelope, decode_trusted, open_envelope
from ..errors import Rejected
from ..forks import ForkProof as Proof
from ..forks import prove, verify
from .host import SyncHost
from .messages import MAX_INNER_FRAME, ForkProof, encode
from .spaces import SpaceState

#: Unpaired envelopes a session keeps, waiting for the other half of a proof that did not fit
#: in one frame.
MAX_SINGLES = 8
#: Room around two envelopes in one FORK_PROOF frame.
_FRAME_ROOM = 64
#: "Never send this author to this peer" in a covered version vector.
_ALL = 2**63 - 1
#: Sends of one proof in a session that the peer does not echo (then the next session's).
MAX_TRIES = 8


@dataclass
class _Sent:
    """A proof sent and not echoed yet: where, and how often."""

    st: SpaceState
    author: str
    seq: int
    tries: int = 1
    last: float | None = None


def _digest(low: bytes, high: bytes) -> bytes:
    """A proof's identity in a session: BLAKE2b-128 of its canonical encoding."""
    return blake2b(cbor2.dumps([1, low, high], canonical=True), digest_size=16).digest()


@runtime_checkable
class ForkHost(Protocol):
    """What fork detection needs from a session's host (a replica, the relay)."""

    def fork_proofs(self, space: str) -> list[bytes]:
        """The encoded proofs held for ``space``."""
        ...

    def fork_count(self, space: str) -> int:
        """How many proofs are held for ``space`` (cheap: asked for every frame pushed)."""
        ...

    def envelope_wire(self, space: str, author: str, seq: int) -> bytes | None:
        """The wire form of a stored envelope, or None."""
        ...

    def receive_fork_proof(self, proof: bytes, source: str, space: str | None = None) -> bool:
        """Verify and keep a proof (its author set aside); whether it was new. Raises
        :class:`~crdt_sync.errors.Rejected` when it does not verify."""
        ...


class SessionForks:
    """One session's fork state: authors held back per space, proofs already exchanged,
    and unpaired envelopes."""

    def __init__(self, host: SyncHost) -> None:
        self._sync_host = host  # (envelope_hash looked up when used: a host that never gets
        # past the handshake may lack it)
        self._host = host if isinstance(host, ForkHost) else None
        #: space -> {author: seq from which this session sends the peer nothing}
        self.held: dict[str, dict[str, int]] = {}
        #: space -> {author: fork point} of proofs known in this session
        self.points: dict[str, dict[str, int]] = {}
        #: proofs (by digest) this session received, sent and not yet echoed, echoed back
        self._received: set[bytes] = set()
        self._unconfirmed: dict[bytes, _Sent] = {}
        self._confirmed: set[bytes] = set()
        #: space -> the host's proof count when its proofs were last looked at
        self._looked: dict[str, int] = {}
        #: (space, author) -> when we last asked the peer for its half (see tick)
        self._asked: dict[tuple[str, str], float] = {}
        self._singles: OrderedDict[tuple[str, str, int], Envelope] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._host is not None

    # -- HAVE ---------------------------------------------------------------------------------
    def _hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self._sync_host.envelope_hash(space, author, seq)

    def heads(self, space: str, vv: dict[str, int], authors: list[str]) -> list[bytes]:
        """The head hash of each author of our HAVE (in ``authors`` order)."""
        return [(self._hash(space, a, vv[a]) if vv[a] else b"") or b"" for a in authors]

    def on_have(self, st: SpaceState, vv: dict[str, int], authors: list[str | None],
                heads: list[bytes]) -> list[bytes]:
        """Compare the peer's head hashes (``heads[i]`` of ``authors[i]``) with ours; for each
        mismatch, hold the author back and send our envelope at that seq. Also the proofs
        the peer may lack."""
        out = self.send_proofs(st)
        if self._host is None:
            return out
        theirs_of = {a: h for a, h in zip(authors, heads, strict=False) if a is not None}
        for author, seq in vv.items():
            theirs = theirs_of.get(author, b"")
            if not seq or not theirs or author in self.held.get(st.name, {}):
                continue
            mine = self._hash(st.name, author, seq)
            if mine is not None and mine != theirs:
                self.held.setdefault(st.name, {})[author] = seq
                wire = self._host.envelope_wire(st.name, author, seq)
                if wire is not None:
                    out.append(encode(ForkProof(st.mine, [wire])))
        self.cap(st)
        return out

    # -- what the session sends and counts ----------------------------------------------------
    def covered(self, st: SpaceState, sent: dict[str, int]) -> dict[str, int]:
        """``sent`` with the authors held back for this peer marked as covered, and those
        sent up to their fork point (nothing from there on is anyone's to send: a device
        whose own key forked keeps its later envelopes, which no peer takes)."""
        held, points = self.held.get(st.name), self.points.get(st.name)
        if not held and not points:
            return sent
        out = {**sent, **dict.fromkeys(held or (), _ALL)}
        for author, point in (points or {}).items():
            if out.get(author, 0) >= point - 1:
                out[author] = _ALL
        return out

    def cap(self, st: SpaceState) -> None:
        """The peer is not expected to send an excluded author past its fork point."""
        points = self.points.get(st.name)
        if points:
            for author, point in points.items():
                if st.peer_have.get(author, 0) >= point:
                    st.peer_have[author] = point - 1

    def for_sync(self, st: SpaceState, mine: dict[str, int]) -> dict[str, int]:
        """Our version vector as the peer must acknowledge it for the space to be synced: an
        author past its fork point need not be (our own key's, when it forked: its later
        envelopes stay here and no peer takes them); an author held back waits for the
        proof that the peer owes us (a vector it cannot cover: a peer that claimed a head
        it cannot back stalls its own session, nothing else)."""
        held, points = self.held.get(st.name), self.points.get(st.name)
        if not held and not points:
            return mine
        out = dict(mine)
        for author, point in (points or {}).items():
            if out.get(author, 0) >= point:
                out[author] = point - 1
        for author in held or ():
            out[author] = _ALL
        return out

    def send_proofs(self, st: SpaceState) -> list[bytes]:
        """FORK_PROOF frames of the host's proofs of ``st`` not yet exchanged in this session."""
        if self._host is None:
            return []
        count = self._host.fork_count(st.name)
        if self._looked.get(st.name) == count:
            return []  # nothing new since last time (proofs are never removed)
        self._looked[st.name] = count
        out: list[bytes] = []
        for data in self._host.fork_proofs(st.name):
            _, low, high = cbor2.loads(data)  # (stored: verified on the way in)
            env = decode_trusted(low)
            self._learn(st, env)
            digest = _digest(low, high)
            if digest not in self._received and digest not in self._confirmed:
                out += self._send(st, env.author, env.seq, low, high)
        self.cap(st)
        return out

    def _send(self, st: SpaceState, author: str, seq: int, low: bytes, high: bytes) -> list[bytes]:
        """The frames of a proof, remembered until the peer echoes it (see :meth:`tick`)."""
        digest = _digest(low, high)
        if digest not in self._unconfirmed:
            self._unconfirmed[digest] = _Sent(st, author, seq)
        return _frames(st.mine, [low, high])

    def _learn(self, st: SpaceState, env: Envelope) -> None:
        points = self.points.setdefault(st.name, {})
        points[env.author] = min(points.get(env.author, env.seq), env.seq)
        held = self.held.get(st.name)
        if held and held.get(env.author, 0) >= env.seq:
            del held[env.author]  # the suspicion is a proof now: the author is set aside

    # -- FORK_PROOF ---------------------------------------------------------------------------
    def on_message(self, st: SpaceState, msg: ForkProof, source: str) -> list[bytes]:
        """A FORK_PROOF from the peer: keep a proof it completes, answer as the module says.

        Raises:
            Rejected: an envelope or a proof that does not verify (the session ends with
                ERROR rejected-envelope, as for any envelope that does not).
        """
        if self._host is None:
            return []
        envs = [open_envelope(w) for w in msg.envelopes]
        for env in envs:
            if env.space != st.name:
                raise Rejected("wrong-space", f"envelope of space {env.space!r} sent as part of {st.name!r}")
        if len(envs) == 1:  # a question; one we can answer with a proof we hold, always
            known = self._known(st, envs[0].author, envs[0].seq)
            if known is not None:
                done = _digest(*known)
                if done in self._unconfirmed:  # our answer's half came back: it holds it
                    del self._unconfirmed[done]
                    self._confirmed.add(done)
                if done in self._received or done in self._confirmed:
                    return []  # the peer holds this proof: no answer (no ping-pong)
                return self._send(st, envs[0].author, self.points[st.name][envs[0].author], *known)
        proof = prove(envs[0], envs[1]) if len(envs) == 2 else self._pair(envs[0])
        if proof is None:
            return []
        data = proof.encode()
        verify(data)  # (cheap next to the signatures already checked; keeps one code path)
        digest = _digest(proof.low.wire, proof.high.wire)
        echo = _frames(st.mine, [proof.low.wire, proof.high.wire])
        if len(envs) == 2:
            if digest in self._confirmed:
                return []  # a duplicate of the peer's echo
            if digest in self._unconfirmed:  # the peer's echo (or its own copy): it holds it
                del self._unconfirmed[digest]
                self._confirmed.add(digest)
                return []
            if digest in self._received:
                return echo  # our echo was lost: the peer sent it again
        self._received.add(digest)
        self._learn(st, proof.low)
        self._host.receive_fork_proof(data, source, st.name)
        out: list[bytes] = []
        if len(envs) == 1:  # the peer has only its half: answer with the whole proof
            out += self._send(st, proof.author, proof.seq, proof.low.wire, proof.high.wire)
        else:  # the echo: the peer's receipt that we hold it
            out += echo
        if proof.parted_earlier and proof.seq > 1:  # the chains parted lower down
            wire = self._host.envelope_wire(st.name, proof.author, proof.seq - 1)
            if wire is not None:
                out.append(encode(ForkProof(st.mine, [wire])))
        self.cap(st)
        return out + self.send_proofs(st)

    def _known(self, st: SpaceState, author: str, seq: int, exact: bool = False) -> list[bytes] | None:
        """The two envelopes of the lowest proof we hold of ``author`` at or below ``seq``
        (``exact``: at ``seq``)."""
        point = self.points.get(st.name, {}).get(author)
        if point is None or point > seq:
            return None
        want = seq if exact else point
        assert self._host is not None
        for data in self._host.fork_proofs(st.name):
            _, low, high = cbor2.loads(data)  # (stored: verified on the way in)
            env = decode_trusted(low)
            if env.author == author and env.seq == want:
                return [low, high]
        return None

    def after_envelopes(self, st: SpaceState, theirs: dict[str, int]) -> list[bytes]:
        """After the peer's envelopes: the proofs it lacks. New ones, and again those of an
        author it sent past the fork point (its FORK_PROOF was lost, or it never had it)."""
        del theirs  # (a lost proof is sent again by tick until the peer echoes it)
        return self.send_proofs(st)

    def tick(self, st: SpaceState, now: float, interval: float) -> list[bytes]:
        """Ask again, every ``interval``, for the proofs of authors still held back (the
        question or its answer may have been lost)."""
        if self._host is None:
            return []
        out = self._resend(st, now, interval)
        held = self.held.get(st.name)
        for author, seq in (held or {}).items():
            key = (st.name, author)
            if now - self._asked.setdefault(key, now) >= interval:
                self._asked[key] = now
                wire = self._host.envelope_wire(st.name, author, seq)
                if wire is not None:
                    out.append(encode(ForkProof(st.mine, [wire])))
        return out

    def _resend(self, st: SpaceState, now: float, interval: float) -> list[bytes]:
        """Proofs sent and not echoed: again every ``interval``, up to :data:`MAX_TRIES` sends."""
        out: list[bytes] = []
        for sent in self._unconfirmed.values():
            if sent.st is not st or sent.tries >= MAX_TRIES:
                continue
            if sent.last is None:
                sent.last = now  # (sent between ticks: timed from the first tick after it)
            elif now - sent.last >= interval:
                sent.last = now
                sent.tries += 1
                known = self._known(st, sent.author, sent.seq, exact=True)
                if known is not None:
                    out += _frames(st.mine, known)
        return out

    def _pair(self, env: Envelope) -> Proof | None:
        """The proof ``env`` completes: with our stored envelope there, or with an unpaired
        one the peer sent earlier; else keep it unpaired (bounded) and return None."""
        assert self._host is not None
        stored = self._host.envelope_wire(env.space, env.author, env.seq)
        if stored is not None:
            other = open_envelope(stored)
            return None if other.hash == env.hash else prove(other, env)
        slot = (env.space, env.author, env.seq)
        other_env = self._singles.get(slot)
        if other_env is not None and other_env.hash != env.hash:
            del self._singles[slot]
            return prove(other_env, env)
        self._singles[slot] = env
        while len(self._singles) > MAX_SINGLES:
            self._singles.popitem(last=False)
        return None


def _frames(space: int, wires: list[bytes]) -> list[bytes]:
    """One FORK_PROOF of both envelopes, or one each when both do not fit in a frame."""
    if sum(map(len, wires)) + _FRAME_ROOM <= MAX_INNER_FRAME:  # inside SEALED
        return [encode(ForkProof(space, wires))]
    return [encode(ForkProof(space, [w])) for w in wires]


__all__ = ["MAX_SINGLES", "ForkHost", "SessionForks"]
