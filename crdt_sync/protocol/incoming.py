"""What a session makes of a peer's ENVELOPES before its host judges them (sans-I/O).

Per envelope, in order: an author this side set aside is skipped from its ``from_seq`` on
(and the peer told again); a successor of an envelope held back for its clock is a gap; one
whose predecessor this side lacks (lost or reordered) is a gap, the sender resends; one
stamped too far ahead is held back (``SessionNotices.hold_back``: CLOCK_SKEW). The rest is
assembled into wire form, chained on its predecessor's hash, for ``SyncHost.accept``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..envelope import assemble, envelope_hash
from .host import SyncHost
from .messages import WireEnvelope
from .notices import SessionNotices
from .spaces import SpaceState, public_key, resolve


@dataclass(slots=True)
class Incoming:
    """One ENVELOPES frame, sorted."""

    wires: list[bytes] = field(default_factory=list)  # for the host to judge, in order
    theirs: dict[str, int] = field(default_factory=dict)  # author -> the highest seq the peer sent
    #: author -> (from_seq, reason, detail) of a chain set aside here: the peer is told
    told: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    aside_here: int = 0  # envelopes skipped because their author is set aside here
    notices: list[bytes] = field(default_factory=list)  # CLOCK_SKEW frames for the peer


def sort_incoming(st: SpaceState, envelopes: Sequence[WireEnvelope], host: SyncHost,
                  notices: SessionNotices) -> Incoming:
    out = Incoming()
    chain: dict[tuple[str, int], bytes] = {}
    theirs, told = out.theirs, out.told
    aside = host.quarantined(st.name)
    wall = notices.wall()
    for e in envelopes:
        author = resolve(st, e.author)
        theirs[author] = max(theirs.get(author, 0), e.seq)
        aside_from = aside.get(author)
        if aside_from is not None and e.seq >= aside_from.from_seq:  # set aside here: skipped,
            # and the peer is told (again); below from_seq it is taken (a fork set aside
            # by a proof, before this side held the chain up to the fork)
            out.aside_here += 1
            told[author] = (aside_from.from_seq, aside_from.reason, aside_from.detail)
            continue
        held = st.holding.get(author)
        if held is not None and e.seq > held:
            continue  # its predecessor is held back: a gap
        prev = b"" if e.seq == 1 else chain.get((author, e.seq - 1)) or host.envelope_hash(
            st.name, author, e.seq - 1)
        if prev is None:
            continue  # its predecessor was lost or reordered: skip; the sender resends
        wire = assemble(st.name, e.author if isinstance(e.author, bytes) else public_key(author),
                        e.seq, prev, e.hlc, e.payload, e.signature)
        if notices.hold_back(st, author, e.seq, e.hlc, wire, wall, out.notices):
            continue  # not stored nor acknowledged: its later seqs are gaps
        chain[(author, e.seq)] = envelope_hash(wire)
        out.wires.append(wire)
    return out
