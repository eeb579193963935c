"""A full disk and a damaged store, told apart from other failures and said plainly.

SQLite and the OS report these as generic errors: ``sqlite3.OperationalError`` "database or
disk is full" (SQLITE_FULL), "disk I/O error" (SQLITE_IOERR, also what a shared-memory file
that cannot be allocated gives), ``sqlite3.DatabaseError`` "database disk image is
malformed" (SQLITE_CORRUPT) or "file is not a database" (SQLITE_NOTADB), ``OSError`` ENOSPC.
This module turns them into :class:`~crdt_sync.errors.DiskFull` and
:class:`~crdt_sync.errors.StoreCorrupt`, which name the file and the next step.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

from .errors import DiskFull, StoreCorrupt, StoreError

_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 10, 11, 13, 26
#: Below this much free space an I/O error from SQLite is taken for a full disk: SQLite
#: reports a shared-memory file it cannot allocate (32 KiB) as a plain I/O error.
LOW_SPACE = 1 << 20
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of ``path``."""
    for candidate in (path, *path.parents):
        try:
            st = os.statvfs(candidate)
        except OSError:
            continue
        return st.f_bavail * st.f_frsize
    return None


def disk_full(path: Path, doing: str) -> DiskFull:
    """The error for a write of ``path`` that found no room, while ``doing``."""
    free = free_bytes(path)
    room = "" if free is None else f" ({free} bytes free)"
    return DiskFull(f"disk full: {doing} needs room on the file system of {path}{room}; "
                    "free some space and run it again", str(path))


def is_full(exc: BaseException, path: Path) -> bool:
    """Whether ``exc``, raised writing ``path``, means the disk is full."""
    if isinstance(exc, DiskFull):
        return True
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == _SQLITE_FULL:
            return True
        if code == _SQLITE_IOERR:
            free = free_bytes(path)
            return free is not None and free < LOW_SPACE
        return False
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def store_error(exc: sqlite3.Error, path: Path, doing: str) -> StoreError:
    """The engine's error for a SQLite error on the store file ``path``, while ``doing``."""
    if is_full(exc, path):
        return disk_full(path, doing)
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StoreCorrupt(
            f"the store {path} is damaged ({exc}); nothing was changed. Keep a copy of the "
            "data directory, then restore it from a backup, or move it aside and sync this "
            "device again from the relay or a peer (edits it never synced are only in the "
            f"copy: `sqlite3 {path} .recover` may salvage them)", str(path))
    return StoreError(f"{doing} failed on {path}: {exc}")


def wal_mode(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """Put ``db`` in WAL mode. Switching a new file's journal mode takes an exclusive lock,
    and SQLite can answer "database is locked" at once, without its busy wait, when another
    process is creating the same store at that moment: retried here, within ``patience``."""
    started, delay = time.monotonic(), 0.005
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() - started > patience:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
