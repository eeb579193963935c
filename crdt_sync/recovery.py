"""Recovery: seal the journals of processes that died before sealing them."""

from __future__ import annotations

import os
from pathlib import Path

from .hlc import HybridClock
from .journal import group_records, orphans, read_records
from .payload import item_hlc
from .sealing import Sealer
from .store import Store


def recover_orphans(directory: Path, store: Store, sealer: Sealer, clock: HybridClock) -> None:
    """Seal what is left in the journal files under ``directory`` whose process is dead
    (their lock can be taken), then remove them."""
    for name, fd in orphans(directory):
        try:
            done = store.journal_folded(name)
            records, count = group_records((directory / name).read_bytes(), skip=done)
            for items in records.values():
                for item in items:
                    clock.observe(item_hlc(item))
            if records:
                with store.write():
                    sealer.seal(records, int(name.split("-")[0], 16))
                    # in the same commit, so dying before the unlink cannot seal them twice
                    store.set_journal_folded(name, count)
            (directory / name).unlink(missing_ok=True)
            with store.write():
                store.forget_journal(name)
        finally:
            os.close(fd)


def unsealed_elsewhere(directory: Path, own: str, store: Store) -> int:
    """Journal records of the other processes on this directory not sealed yet."""
    total = 0
    for path in directory.glob("*.log"):
        if path.name == own:
            continue
        try:
            count = sum(1 for _ in read_records(path))
        except FileNotFoundError:
            continue
        total += max(0, count - store.journal_folded(path.name))
    return total
