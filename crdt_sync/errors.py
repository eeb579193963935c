"""The root error of the engine and its subclasses, each carrying a reason a caller can act on."""

from __future__ import annotations


class CrdtSyncError(Exception):
    """Root of every error raised by :mod:`crdt_sync`."""


class ValueRejected(CrdtSyncError, ValueError):
    """A value the CRDT cannot hold exactly (too big an int, too large, unsupported type)."""


class NotFound(CrdtSyncError, KeyError):
    """A missing or deleted entity."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


class StoreError(CrdtSyncError):
    """The data directory cannot be used as it is."""


class StoreVersionError(StoreError):
    """The data directory was written by a newer crdt-sync than this one."""


class Rejected(CrdtSyncError):
    """Received data (an envelope or a bundle) failed verification; nothing was changed.

    Attributes:
        reason: a short machine-readable code, e.g. ``bad-signature``, ``broken-chain``, ``fork``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class PassphraseError(CrdtSyncError):
    """The device's key file (``DIR/keys``) is sealed with a passphrase, and the passphrase
    is missing (``reason`` ``"missing"``) or does not open it (``"wrong"``). The message
    names the environment variable to set (:mod:`crdt_sync.secrets`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DiskFull(StoreError):
    """The file system holding the data directory has no room for a write.

    Attributes:
        path: the file that could not grow.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class StoreCorrupt(StoreError):
    """The store's SQLite file is damaged (or not a SQLite file).

    Attributes:
        path: the damaged file.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class AmbiguousSpace(CrdtSyncError, LookupError):
    """A local space name bound to more than one space id (two spaces that happen to share
    a name are different spaces): name the space by its id.

    Attributes:
        name: the name asked for.
        ids: the ids bound to it, sorted.
    """

    def __init__(self, name: str, ids: list[str]) -> None:
        super().__init__(f"the space name {name!r} is bound to {len(ids)} spaces ({', '.join(ids)}): "
                         "use the id")
        self.name = name
        self.ids = list(ids)
