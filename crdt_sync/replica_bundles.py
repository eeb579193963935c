"""Bundles, the file form of sync, as :class:`~crdt_sync.replica.Replica` offers them:
export (the whole history, what a peer lacks, or a snapshot and the tail for a device never
met) and import (all or nothing per envelope chain, docs/PROTOCOL.md, "Bundle format"). The
snapshot work is :class:`~crdt_sync.bootstrap.Bootstrap`'s; this mixin seals pending edits
first and wires the replica's receive path in.
"""

from __future__ import annotations

from .bundle import Bundle, decode_bundle, encode_bundle
from .clocks import hold_back
from .errors import Rejected
from .replica_parts import ReplicaParts
from .results import ImportResult
from .snapshot_transfer import decode_transfer


class BundleCommands(ReplicaParts):
    """``export_bundle``, ``snapshot`` and ``import_bundle`` (mixed into ``Replica``)."""

    # -- bundles -------------------------------------------------------------------------
    def export_bundle(self, space: str, since: dict[str, int] | None = None, *,
                      snapshot: bool = False) -> bytes:
        """Everything of ``space`` not covered by ``since`` (all of it by default). With
        ``snapshot`` (for a device never met), a snapshot and the tail after it instead of the
        whole history (docs/PROTOCOL.md, "Snapshots"): the one this device keeps, else a new
        one (only an admin makes one: :meth:`snapshot`); the membership envelopes stay in
        full. A device that started a chain from a snapshot passes that snapshot on.

        Raises:
            Rejected: ``not-admin`` / ``snapshot-unavailable``: no snapshot can be given.
        """
        space = self._book.resolve(space)
        self.seal()
        self.refresh()
        snap, envelopes = self._bootstrap.bundle_parts(space, since or {}, snapshot)
        return encode_bundle(self.identity, space, self._store.version_vector(space),
                             {} if snap else since or {}, envelopes, self._store.fork_proofs(space), snap)

    def snapshot(self, space: str) -> bytes:
        """Make a signed snapshot of ``space`` at this device's version vector (an admin
        only: ``Rejected("not-admin")``), kept to be carried by snapshot bundles. Returns it."""
        space = self._book.resolve(space)
        self.seal()
        self.refresh()
        return self._bootstrap.make(space).wire

    def apply_snapshot(self, space: str, data: bytes, source: str) -> tuple[str, str]:
        """A snapshot transfer a session brought (:mod:`crdt_sync.snapshot_transfer`):
        verified and applied as a bundle's snapshot is (:meth:`Bootstrap.apply
        <crdt_sync.bootstrap.Bootstrap.apply>`, with the transfer's membership envelopes); its
        tail follows in the session. Returns ``"applied"`` or the refusal's reason (recorded),
        and a detail."""
        self._check_open()
        try:
            transfer = decode_transfer(data)
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            return rejected.reason, rejected.detail
        self.seal()
        bundle = Bundle(source, space, {}, {}, transfer.membership, [], transfer.snapshot)
        try:
            verdict, detail, touched = self._bootstrap.apply(bundle, source)
        finally:
            self._members.save_keys()
        self._received(touched)
        return verdict, detail

    def import_bundle(self, data: bytes, source: str = "bundle") -> ImportResult:
        """Verify and apply a bundle, all or nothing (see :meth:`receive`)."""
        self._check_open()
        try:
            bundle = decode_bundle(data)
        except Rejected as rejected:
            self._store.record_rejection(source, rejected)
            raise
        forks = self._store.fork_count(bundle.space)
        for proof in bundle.proofs:  # first: the envelopes they exclude are then refused
            self.receive_fork_proof(proof, source, bundle.space)
        snap = None
        if bundle.snapshot is not None:  # then the tail, per author (crdt_sync.bootstrap)
            self.seal()
            try:
                snap, _detail, touched = self._bootstrap.apply(bundle, source)
            finally:
                self._members.save_keys()
            self._received(touched)
        # Envelopes stamped too far ahead wait (docs/PROTOCOL.md, "Clocks"): the bundle keeps them.
        kept, held, ahead_ms = hold_back(bundle.envelopes, self._clock.wall(),
                                         self._skew_ms,
                                         self._store.version_vector(bundle.space))
        result = (self.receive if snap is None else self.accept)(kept, source, bundle.space)
        forks = self._store.fork_count(bundle.space) - forks
        with self._store.write():
            self._store.join(bundle.space)
            if bundle.exporter != self.device_id:
                self._store.record_peer(bundle.exporter, bundle.space, bundle.version_vector)
        return ImportResult(bundle.space, bundle.exporter, result.applied, result.duplicates, held, ahead_ms,
                            forks, snap)
