"""What ``Replica.status()`` reports, read from the store: per space, its version vector, what
no peer acknowledged, each peer seen and how far behind it is, forks; and the device's
refusals, clock refusals and journal damage."""

from __future__ import annotations

from pathlib import Path

from .fork_guard import fork_statuses
from .hlc import hlc_to_iso
from .quarantine import PeerRefusal, QuarantineRecord
from .results import ClockRefusal, JournalDamage, PeerStatus, SpaceStatus, Status
from .store import Store


def device_status(store: Store, device_id: str, path: Path, unsealed: int,
                  quarantined: list[QuarantineRecord], refused_by_peers: list[PeerRefusal]) -> Status:
    """The :class:`~crdt_sync.results.Status` of the device ``device_id`` on ``store``."""
    spaces = {}
    for name in store.spaces():
        vv = store.version_vector(name)
        peers = store.peers(name)
        acked = max((p_vv.get(device_id, 0) for _, p_vv, _ in peers), default=0)
        spaces[name] = SpaceStatus(
            version_vector=vv,
            unacknowledged=max(0, vv.get(device_id, 0) - acked),
            peers=[PeerStatus(device=p, version_vector=p_vv, seen=hlc_to_iso(seen << 16),
                              behind=sum(max(0, s - p_vv.get(a, 0)) for a, s in vv.items()),
                              synced=all(p_vv.get(a, 0) >= s for a, s in vv.items()))
                   for p, p_vv, seen in peers],
            forks=fork_statuses(store.fork_records(name)))
    damage = [JournalDamage(hlc_to_iso(at << 16), j, k, o, b, r, t)
              for at, j, k, o, b, r, t in store.journal_damage()]
    # A refusal the peer has acknowledged past since (its clock caught up) is over.
    clock = [ClockRefusal(peer, space, author, seq, ahead, hlc_to_iso(at << 16), author == device_id)
             for peer, space, author, seq, ahead, at in store.clock_refusals()
             if store.peer_vv(peer, space).get(author, 0) < seq]
    return Status(device=device_id, data=str(path), spaces=spaces, unsealed=unsealed,
                  rejections=len(store.rejections()), quarantined=quarantined,
                  refused_by_peers=refused_by_peers, clock_refusals=clock, journal_damage=damage)
