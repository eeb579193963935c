"""Migrating a data directory from before spaces were bound to keys (store formats 1 and 2).

Those stores named spaces by plain names, and their envelopes carry those names: they
cannot become spaces bound to a key in place (a space id is the hash of a genesis that this
device signs now, and every envelope names its space). So :func:`migrate`:

1. moves the old store aside, ``DIR/store.sqlite3.v2-backup`` (with its write-ahead log
   folded in first), and the journals of the old build, ``DIR/journal.v2-backup`` (edits the
   old build never sealed: kept, not replayed);
2. opens a fresh format-3 store with the same device key (``DIR/keys``; an older directory
   kept the seed in the store's ``meta`` table, which moves into the key file);
3. for each old space, creates a new space of the same local name (this device its admin)
   and writes each live entity's current state into it: plain fields as values, text fields
   as text, list fields as lists.

Peers then receive the new spaces like any others: an admin grants or invites them. What the
old spaces' other authors wrote is kept as this device's current state, not as their history.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .entity import KIND_LIST, KIND_REMOVED, KIND_TEXT, EntityDoc
from .errors import StoreError
from .payload import unpack_items
from .store import DB_NAME, FIRST_ID_FORMAT, SPACE_COLLECTION

BACKUP_SUFFIX = ".v2-backup"


@dataclass(frozen=True, slots=True)
class MigrateReport:
    """What :func:`migrate` did: ``spaces`` maps each old space name to its new id;
    ``entities`` counts the entities written; ``backup`` is where the old store is; and
    ``migrated`` is False when the directory needed nothing (already format 3, or empty)."""

    migrated: bool
    spaces: dict[str, str] = field(default_factory=dict)
    entities: int = 0
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"migrated": self.migrated, "spaces": dict(self.spaces), "entities": self.entities,
                "backup": self.backup}


def _old_format(db: sqlite3.Connection) -> int | None:
    try:
        row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
    except sqlite3.OperationalError:
        return None
    return None if row is None else int(row[0])


def migrate(path: str | os.PathLike[str], passphrase: str | None = None) -> MigrateReport:
    """Migrate the data directory ``path`` (see the module docstring). Run it with no other
    process on the directory.

    Raises:
        StoreError: the directory holds no store, or a backup from an earlier migration is
            in the way.
    """
    from .replica import Replica  # (the replica imports nothing of this module)

    directory = Path(path)
    db_path = directory / DB_NAME
    if not db_path.exists():
        raise StoreError(f"{directory} holds no crdt-sync store ({DB_NAME})")
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        version = _old_format(db)
        if version is None or version >= FIRST_ID_FORMAT:
            return MigrateReport(False)
        seed_row = db.execute("SELECT value FROM meta WHERE key='device_seed'").fetchone()
        spaces = _read_spaces(db)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    backup = directory / (DB_NAME + BACKUP_SUFFIX)
    if backup.exists():
        raise StoreError(f"{backup} exists (an earlier migration): move it away first")
    os.replace(db_path, backup)
    for extra in ("-wal", "-shm"):
        Path(f"{db_path}{extra}").unlink(missing_ok=True)
    journals = directory / "journal"
    if journals.exists():
        os.replace(journals, directory / ("journal" + BACKUP_SUFFIX))
    if seed_row is not None and not (directory / "keys").exists():
        from .secrets import Secrets

        Secrets.open(directory, passphrase, legacy_seed=bytes(seed_row[0]))
    written = 0
    ids: dict[str, str] = {}
    with Replica(directory, passphrase=passphrase) as replica:
        for name, (joined, entities) in spaces.items():
            space = replica.create_space(name)
            ids[name] = space.id
            for (coll, ent), doc_fields in entities.items():
                with space.transaction() as tx:
                    writer = tx.entity(coll, ent)
                    for fname, (kind, value) in doc_fields.items():
                        if kind == KIND_TEXT:
                            writer.text(fname).set(value)
                        elif kind == KIND_LIST:
                            writer.list(fname).extend(value)
                        else:
                            writer.set(fname, value)
                    if not doc_fields:
                        writer.update({})
                written += 1
            if not joined:
                replica.leave(space.id)
    return MigrateReport(True, ids, written, str(backup))


Fields = dict[str, tuple[int, Any]]


def _read_spaces(db: sqlite3.Connection) -> dict[str, tuple[bool, dict[tuple[str, str], Fields]]]:
    """Every old space (name -> (kept, {(collection, id): {field: (kind, value)}})), with the
    current state of each live entity, read from its snapshot and parts."""
    kept = {s: bool(j) for s, j in db.execute("SELECT space, joined FROM spaces")}
    out: dict[str, tuple[bool, dict[tuple[str, str], Fields]]] = {}
    rows = db.execute("SELECT space, collection, entity, snapshot, upto FROM entities "
                      "WHERE deleted=0 ORDER BY space, collection, entity").fetchall()
    for space in kept:
        out[space] = (kept[space], {})
    for space, coll, ent, snapshot, upto in rows:
        if coll == SPACE_COLLECTION:
            continue
        doc = EntityDoc((space, coll, ent), 1, lambda _ent, _event: None)
        try:
            if snapshot is not None:
                doc.apply(bytes(snapshot))
            for (data,) in db.execute("SELECT data FROM parts WHERE space=? AND collection=? AND "
                                      "entity=? AND id>? ORDER BY id", (space, coll, ent, upto)):
                for _hlc, update in unpack_items(bytes(data)):
                    doc.apply(update)
            if not doc.exists():
                continue
            values = doc.fields()
            fields: Fields = {}
            for name, value in values.items():
                won = doc.winner(name)
                kind = won.kind if won is not None else 0
                if kind != KIND_REMOVED:
                    fields[name] = (kind, value)
        finally:
            doc.close()
        out.setdefault(space, (True, {}))[1][(coll, ent)] = fields
    return out


__all__ = ["BACKUP_SUFFIX", "MigrateReport", "migrate"]
