"""crdt-sync through its full write path: a :class:`~crdt_sync.Replica` on a data directory
(journal, sealed and signed envelopes, SQLite, observers), default settings.

The text is one entity's text field; assets are entities with typed fields.

- Merging between replicas goes through the data path of a sync session without its
  framing: the sender's ``missing_envelopes`` (its own envelopes since the last hand-out),
  the receiver's ``receive`` (verify signatures and chains, apply, store). Bundles carry the
  same envelopes, but exporting one scans the whole space, which a replay exporting
  thousands of times would measure instead of the merge.
- A new replica gets the whole document as a bundle (``export_bundle`` / ``import_bundle``):
  the state size is that bundle, envelopes and signatures included; the data directory's
  size is reported next to it.
- Catch-up runs two in-process sync sessions (:func:`benchmarks._flights.drive`) and counts
  the bytes of every frame: the figure is after the handshake (HAVE, ENVELOPES, ACK, BYE,
  both ways); with the handshake is in the details.
- Loading is reopening the data directory after ``close()`` (which seals what is left and
  compacts the text into a snapshot; its time is reported next to the load's), as an app
  restarting does.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

import crdt_sync
from crdt_sync import NotFound, Replica
from crdt_sync.space_crypto import epoch_id_of
from crdt_sync.values import MAX_TEXT_INSERT

from ..._harness import dir_size
from ..._trace import Patch
from .base import CatchUp, Fields, Update

#: every agent of a run writes one space, known by its id (no device of the run creates it)
SPACE, DOCS, DOC, BODY, ASSETS = "s" + "b" * 32, "docs", "doc", "body", "assets"
#: the keys of that space, which every agent holds (as a grant's keys record would give them)
_SECRET, _EPOCH_KEY = b"\x11" * 32, b"\x22" * 32
_EPOCH_ID = epoch_id_of(_EPOCH_KEY)
#: no limit on one hand-out: the replay asks for exactly the envelopes it needs
ALL, ALL_BYTES = 1 << 30, 1 << 62
MAX_DRAWS = 1000
#: How far above the previous agent's client id the next one is drawn (ids are below 2**53).
CLIENT_BAND = 2**53 // 64
CHUNK = MAX_TEXT_INSERT // 4  # characters: at most 4 UTF-8 bytes each


class OursDoc:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.replica = Replica(path)
        ring = self.replica.secrets.keyring()  # every agent holds the run's space keys
        if ring.key(SPACE, _EPOCH_ID) is None:
            ring.add(SPACE, 0, _EPOCH_ID, _EPOCH_KEY, _SECRET)
            self.replica.secrets.save()
        self.space = self.replica.space(SPACE)
        self._handed_out = 0  # own envelopes already returned by take_local

    def edit(self, patches: Sequence[Patch]) -> None:
        with self.space.transaction() as tx:
            body = tx.entity(DOCS, DOC).text(BODY)
            for pos, deleted, inserted in patches:
                if deleted:
                    body.delete(pos, deleted)
                # one insert call takes at most MAX_TEXT_INSERT bytes: a larger paste goes in
                # pieces, in the same transaction, as an app would send it
                for at in range(0, len(inserted), CHUNK):
                    body.insert(pos + at, inserted[at:at + CHUNK])

    def settle(self) -> None:
        self.replica.seal()  # seal the journal into envelopes: part of the write path's cost

    def text(self) -> str:
        try:
            return str(self.space.get(DOCS, DOC).get(BODY, ""))
        except NotFound:
            return ""

    def seed(self, ids: Sequence[str], initial: Sequence[Fields]) -> None:
        with self.space.transaction() as tx:
            for id, fields in zip(ids, initial, strict=True):
                tx.put(ASSETS, id, fields)

    def put(self, id: str, fields: Fields) -> None:
        with self.space.transaction() as tx:
            tx.put(ASSETS, id, fields)

    def content(self) -> dict[str, dict[str, Any]]:
        return {id: fields for _, id, fields in self.space.rows(ASSETS)}

    def take_local(self) -> Update:
        """This replica's own envelopes since the last call (not those it merged)."""
        replica = self.replica
        replica.seal()
        vv = replica.version_vector(SPACE)
        me = replica.device_id
        if vv.get(me, 0) == self._handed_out:
            return []
        envelopes = replica.sync_host.missing_envelopes(SPACE, {**vv, me: self._handed_out}, ALL,
                                                      ALL_BYTES)
        self._handed_out = vv[me]
        return [env.wire for env in envelopes]

    def merge(self, update: Update) -> None:
        if update:
            self.replica.receive(update, "bench", SPACE)

    def encode(self) -> bytes:
        return self.replica.export_bundle(SPACE)

    def full_update(self) -> bytes:
        return self.encode()


class OursEngine:
    name = "ours"
    unit = "cp"  # TextField counts characters, as Python's str does

    def __init__(self) -> None:
        self._replicas = 0
        self._last_client = 0

    def version(self) -> str:
        return crdt_sync.__version__

    def new_doc(self, work: Path, agent: int, track: bool) -> OursDoc:
        """A replica whose client id is above the previous agent's.

        A replica draws its client id at random, and the text (pycrdt) orders concurrent
        inserts at one position by client id; the concurrent traces recorded theirs with
        agent 0 first. So an agent's replica is drawn again until its id is higher.
        """
        if agent == 0:
            self._last_client = 0
        # Each id within one band above the last (1/64 of the id space, so a draw falls in
        # it one time in 64): an id drawn near the top would leave the next agent no room.
        for attempt in range(MAX_DRAWS):
            doc = OursDoc(work / f"ours-{agent}-{attempt}")
            if self._last_client < doc.replica.client_id <= self._last_client + CLIENT_BAND:
                self._last_client = doc.replica.client_id
                return doc
            doc.replica.close()
            shutil.rmtree(doc.path)
        raise RuntimeError(f"no client id above {self._last_client} in {MAX_DRAWS} draws")

    def merge_new(self, work: Path, update: bytes) -> OursDoc:
        self._replicas += 1
        doc = OursDoc(work / f"ours-new-{self._replicas}")
        doc.replica.import_bundle(update)
        return doc

    def before_load(self, doc: Any) -> dict[str, Any]:
        t0 = perf_counter()
        doc.replica.close()
        return {"close_s": perf_counter() - t0, "disk_bytes": dir_size(doc.path)}

    def load(self, doc: Any, state: bytes) -> OursDoc:
        return OursDoc(doc.path)

    def catch_up(self, ahead: Any, behind: Any) -> CatchUp:
        from ..._flights import drive

        run = drive(ahead.replica.sync_host, behind.replica.sync_host)
        return CatchUp(run.sync_total, run.seconds,
                       {"with_handshake": run.total, "flights": run.flights, "envelopes": run.envelopes,
                        "frame_bytes": run.type_bytes})

    def extra(self, doc: Any) -> dict[str, Any]:
        return {}


ENGINE = OursEngine()
