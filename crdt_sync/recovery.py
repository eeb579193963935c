"""Recovery: seal the journals of processes that died before sealing them.

A dead process's journal is read with :func:`crdt_sync.journal.scan`: every intact record
after the sealed offset is sealed, a damaged run loses only the records inside it. A file
with damage is not deleted but kept aside under ``DIR/damaged/`` and the loss is recorded in
the store (``journal_damage``), where :meth:`crdt_sync.Replica.status` reports it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import DiskFull
from .hlc import HybridClock
from .journal import Damaged, group_intact, orphans, scan
from .payload import item_hlc
from .sealing import Sealer
from .store import Store

#: Where damaged journal files are kept, under the data directory.
DAMAGED_DIR = "damaged"


def recover_orphans(directory: Path, store: Store, sealer: Sealer, clock: HybridClock) -> None:
    """Seal what is left in the journal files under ``directory`` whose process is dead
    (their lock can be taken), then remove them, or keep them aside when damaged."""
    for name, fd in orphans(directory):
        try:
            _recover(directory, name, store, sealer, clock)
        finally:
            os.close(fd)


def _recover(directory: Path, name: str, store: Store, sealer: Sealer, clock: HybridClock) -> None:
    path = directory / name
    done = store.journal_folded(name)  # bytes of the file already sealed
    data = path.read_bytes()
    found = scan(data)
    end = max([e for _, e in found.records] + [d.offset + d.length for d in found.damaged],
              default=0)
    if end < len(data):  # give back the room the dead process reserved (a full disk needs it)
        os.truncate(path, end)
        data = data[:end]
    records, bad = group_intact(data, [(s, e) for s, e in found.records if e > done])
    lost = [d for d in found.damaged if d.offset + d.length > done]
    lost += [Damaged(s, e - s, 1, False) for s, e in bad]
    kept = store.journal_kept(name)  # an earlier attempt that died before moving the file
    if lost and kept is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = str(directory.parent / DAMAGED_DIR / f"{name}.corrupt-{stamp}")
    for items in records.values():
        for item in items:
            clock.observe(item_hlc(item))
    if records or lost:
        try:
            with store.write():
                if records:
                    sealer.seal(records, int(name.split("-")[0], 16))
                # in the same commit, so dying before the move cannot seal them twice
                store.set_journal_folded(name, len(data))
                for d in lost:
                    store.record_journal_damage(name, str(kept), d.offset, d.length, d.records,
                                                d.tail)
        except DiskFull as exc:
            raise DiskFull(f"{exc}. Sealing the edits a process that ended left in the journal "
                           f"{path} needs it; they stay there until there is room",
                           exc.path) from exc
    if kept is not None:
        Path(kept).parent.mkdir(exist_ok=True)
        os.replace(path, kept)
    else:
        path.unlink(missing_ok=True)
    with store.write():
        store.forget_journal(name)


def unsealed_elsewhere(directory: Path, own: str, store: Store) -> int:
    """Journal records of the other processes on this directory not sealed yet."""
    total = 0
    for path in directory.glob("*.log"):
        if path.name == own:
            continue
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        done = store.journal_folded(path.name)
        total += sum(1 for _, end in scan(data).records if end > done)
    return total
