"""The per-process journal: one record per local transaction, so an edit that returned
survives ``kill -9`` without paying for a SQLite commit per keystroke.

The file is memory-mapped and its blocks reserved ahead (``posix_fallocate``): appending a
record is a copy into the page cache, which the kernel owns, so it survives the process's
death like a ``write()`` would, without the system call (measured: the syscall costs about
4.5 µs per edit on a long text, the copy about 1; see docs/BENCHMARKS.md). Reserving the
blocks first means a full disk is an ``OSError`` when the journal grows, never a ``SIGBUS``
on a write into a hole. With ``fsync`` (surviving power loss) each record is written with
``write()`` and ``fdatasync()`` instead, as before; also where ``posix_fallocate`` is missing.

Each process appends to its own file under ``DIR/journal/`` and holds an exclusive
``flock`` on it while alive. Records are folded into SQLite in batches (and sealed into
envelopes there); the store remembers how many records of each file it has folded, in the
same SQLite transaction, so folding twice is impossible. A file whose lock can be taken
belongs to a dead process: whoever opens the data directory next folds what is left.

Record: ``u32 length | u32 crc32 | u16 len(space) | u16 len(collection) | u16 len(id) |
space | collection | id | item`` (little endian; the item as in :mod:`crdt_sync.payload`).
This module is the only one that knows the layout. The zero-filled space reserved after the
last record is not a record (a record is never empty). A dead process's file is read with
:func:`scan`, which resynchronises after a damaged record (bad CRC or inconsistent frame) so
that damage loses only the records it hit; a damaged run after the last intact record is
also what a process killed while appending leaves (a torn tail, whose edit never returned).
The store records how many *bytes* of each file are sealed (the end of the last sealed
record), so that damage before that point cannot shift what counts as sealed.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .diskfaults import disk_full, is_full
from .errors import DiskFull, StoreError
from .payload import ITEM_HEADER

_FRAME = struct.Struct("<II")  # u32 length | u32 crc32, before each record
_ITEM_HEADER = ITEM_HEADER  # u64 hlc | u32 length: a record's item (crdt_sync.payload)
_LENS = struct.Struct("<HHH")
#: bytes reserved when a journal file is created, and the least it grows by
RESERVE_BYTES = 1 << 20
_MAPPED = hasattr(os, "posix_fallocate")


def key_prefix(space: str, collection: str, entity: str) -> bytes:
    """The encoded (space, collection, id) that starts a record."""
    parts = [p.encode("utf-8") for p in (space, collection, entity)]
    return _LENS.pack(*(len(p) for p in parts)) + b"".join(parts)


class RecordKey:
    """What appending a record for one entity needs, computed once per loaded entity: the
    key's prefix, its CRC32 and the record's head layout ``u32 length | u32 crc32 | prefix |
    u64 hlc | u32 n`` (the item's header last), so that a record is this head and the update.
    Made by :meth:`Journal.record_key`; opaque to everyone else."""

    __slots__ = ("base", "crc", "head", "prefix")

    def __init__(self, key: tuple[str, str, str]) -> None:
        self.prefix = key_prefix(*key)
        self.crc = zlib.crc32(self.prefix)
        self.head = struct.Struct(f"<II{len(self.prefix)}sQI")
        self.base = self.head.size - _FRAME.size  # the body's length without the update


def frame_record(prefix: bytes, item: bytes, prefix_crc: int) -> bytes:
    """The framed record ``prefix + item``; ``prefix_crc`` is ``zlib.crc32(prefix)``."""
    return _FRAME.pack(len(prefix) + len(item), zlib.crc32(item, prefix_crc)) + prefix + item


def decode_record(body: bytes) -> tuple[tuple[str, str, str], bytes]:
    """``((space, collection, id), item)`` of a record body."""
    a, b, c = _LENS.unpack_from(body)
    off = _LENS.size
    space = body[off:off + a].decode()
    coll = body[off + a:off + a + b].decode()
    ent = body[off + a + b:off + a + b + c].decode()
    return (space, coll, ent), body[off + a + b + c:]


class Journal:
    """This process's journal file (see module docstring)."""

    def __init__(self, directory: Path, client_id: int, fsync: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.client_id = client_id
        self.fsync = fsync
        self.generation = 0
        self.count = 0
        self.size = 0
        #: records of the current file sealed so far, and the byte offset after them: a seal
        #: reads the records after it back from the file (see :meth:`unsealed_records`)
        self.sealed_count = self.sealed_size = 0
        self._fd = -1
        #: the mapped file (None: records go through ``write()``), and its size (0 without
        #: a map): a record that ends within it may be copied in (see :meth:`append_record`)
        self.map: mmap.mmap | None = None
        self.limit = 0
        self._open()

    @property
    def name(self) -> str:
        return f"{self.client_id:x}-{self.generation}.log"

    def _open(self) -> None:
        path = self.directory / self.name
        # Between creating the file and locking it, another process opening the directory
        # can take it for a dead process's (empty) journal and remove it. Wait for its lock,
        # then make sure the path is still our file, else start again.
        for _ in range(100):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    ours = os.path.samestat(os.fstat(fd), os.stat(path))
                except FileNotFoundError:
                    ours = False
            except BaseException:
                os.close(fd)
                raise
            if ours:
                break
            os.close(fd)
        else:
            raise OSError(f"cannot create the journal {path}: it keeps being removed")
        self._fd = fd
        self.count = self.size = self.sealed_count = self.sealed_size = 0
        if _MAPPED and not self.fsync:
            try:
                self._reserve(RESERVE_BYTES)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                    self._fd = -1
                    os.close(fd)
                    raise
                self.map = None  # a file system that cannot reserve or map: write() it is
                self.limit = 0
            except DiskFull:  # too little room to reserve ahead: write() each record, which
                os.ftruncate(fd, 0)  # works while there is room for it (a nearly full disk)
                self.map = None
                self.limit = 0

    def _reserve(self, capacity: int, doing: str = "reserving room in the journal") -> None:
        """Reserve the file's blocks up to ``capacity`` bytes and map them.

        Raises:
            DiskFull: no room for them (ENOSPC, EDQUOT).
        """
        try:
            os.posix_fallocate(self._fd, 0, capacity)
        except OSError as exc:
            if is_full(exc, self.directory):
                raise disk_full(self.directory / self.name, doing) from exc
            raise
        if self.map is None:
            self.map = mmap.mmap(self._fd, capacity)
        else:
            self.map.resize(capacity)
        self.limit = capacity

    @staticmethod
    def record_key(key: tuple[str, str, str]) -> RecordKey:
        """The :class:`RecordKey` of an entity, for :meth:`append_update`."""
        return RecordKey(key)

    def append_update(self, rk: RecordKey, hlc: int, update: bytes) -> None:
        """Append the record of one local transaction's ``update`` of an entity at ``hlc``.

        Runs once per keystroke: ``frame_record(prefix, pack_item(hlc, update), crc)`` built
        with fewer calls (the item's header packed with the frame, its CRC chained), and the
        copy into the map inlined while the record ends within it.
        """
        n = len(update)
        crc = zlib.crc32(update, zlib.crc32(_ITEM_HEADER.pack(hlc, n), rk.crc))
        record = rk.head.pack(rk.base + n, crc, rk.prefix, hlc, n) + update
        start = self.size
        end = start + len(record)
        if end <= self.limit:
            self.map[start:end] = record  # type: ignore[index]
            self.size = end
            self.count += 1
        else:
            self.append_record(record)

    @property
    def unsealed(self) -> int:
        """Records of the current file not sealed yet."""
        return self.count - self.sealed_count

    def unsealed_records(self) -> dict[tuple[str, str, str], list[bytes]]:
        """The records not sealed yet, grouped by entity (see :func:`group_records`)."""
        return group_records(self.written_since(self.sealed_size), verify=False)[0]

    def mark_sealed(self) -> None:
        """Every record written so far is sealed (in the store's commit that sealed them)."""
        self.sealed_count, self.sealed_size = self.count, self.size

    def append(self, prefix: bytes, item: bytes, prefix_crc: int | None = None) -> None:
        """Append the record ``prefix + item`` (prefix: :func:`key_prefix`): one copy into the
        mapped file, or one ``write()`` without the map.

        ``prefix_crc``, ``zlib.crc32(prefix)``, may be passed by a caller that keeps it.
        """
        if prefix_crc is None:
            prefix_crc = zlib.crc32(prefix)
        self.append_record(frame_record(prefix, item, prefix_crc))

    def append_record(self, record: bytes) -> None:
        """Append a record built by :func:`frame_record` (or by :meth:`append_update`): a
        copy into the map, growing it first if needed, or ``write()`` without one."""
        start = self.size
        end = start + len(record)
        mapped = self.map
        if mapped is not None:
            if end > self.limit:  # resizes this same map
                self._reserve(max(end, 2 * self.limit), "growing the journal for an edit (it "
                                                        "was not saved)")
            mapped[start:end] = record
        else:
            try:
                written = os.write(self._fd, record)
            except OSError as exc:
                if is_full(exc, self.directory):
                    raise disk_full(self.directory / self.name,
                                    "journaling an edit (it was not saved)") from exc
                raise
            if written != len(record):  # a full disk: refuse loudly rather than half-write,
                os.ftruncate(self._fd, start)  # and leave no torn record before the next one
                raise OSError(f"journal write of {len(record)} bytes wrote {written}")
            if self.fsync:
                os.fdatasync(self._fd)
        self.count += 1
        self.size = end

    def written_since(self, offset: int) -> bytes:
        """The records appended after byte ``offset`` of the current file (for a fold)."""
        if self.map is not None:
            return self.map[offset:self.size]
        return os.pread(self._fd, self.size - offset, offset)

    def rotate(self) -> str:
        """Start a new file; returns the old file's name (the caller deletes it once folded)."""
        old = self.name
        self._release()
        self.generation += 1
        self._open()
        return old

    def _release(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None
            self.limit = 0
            os.ftruncate(self._fd, self.size)  # give back the reserved space after the records
        os.close(self._fd)
        self._fd = -1

    def close(self) -> None:
        if self._fd >= 0:
            self._release()


class ReadOnlyJournal(Journal):
    """The journal of a replica opened read-only: no file, and every append refuses."""

    def __init__(self, directory: Path, client_id: int) -> None:
        self.directory = directory
        self.client_id = client_id
        self.fsync = False
        self.generation = 0
        self.count = self.size = self.sealed_count = self.sealed_size = 0
        self._fd = -1
        self.map = None
        self.limit = 0

    @property
    def name(self) -> str:
        return f"{self.client_id:x}-read-only"  # no such file: close() unlinks nothing

    def append_record(self, record: bytes) -> None:
        raise StoreError(f"{self.directory.parent} is open read-only (the disk was full): "
                         "the edit was not saved")


def read_records(path: Path) -> Iterator[bytes]:
    """Bodies of the intact records of a journal file, in order, skipping damaged ones (see
    :func:`scan`)."""
    data = path.read_bytes()
    for start, end in scan(data).records:
        yield data[start + _FRAME.size:end]


_HEAD = struct.Struct("<IIHHH")  # a record's frame and the lengths of its key
_U32 = struct.Struct("<I")
#: The longest part of a record's key in bytes: names are at most 256 characters
#: (:data:`crdt_sync.values.MAX_NAME`), 4 bytes each in UTF-8.
MAX_KEY_PART = 1024
_NONZERO = re.compile(rb"[^\x00]")


@dataclass(frozen=True, slots=True)
class Damaged:
    """A run of bytes between intact records (or after the last one) that holds no intact
    record: ``length`` bytes from ``offset``. ``records`` is how many records it held as far
    as their frames can still be followed (at least 1). ``tail`` marks a run after the last
    intact record: a write cut short when the process died looks the same."""

    offset: int
    length: int
    records: int
    tail: bool


@dataclass(frozen=True, slots=True)
class Scan:
    """What :func:`scan` found: the ``(start, end)`` byte range of each intact record, in
    order, and the damaged runs between them."""

    records: list[tuple[int, int]]
    damaged: list[Damaged]


def _framed(data: bytes, off: int) -> int:
    """The end of a record whose frame is consistent at ``off`` (it fits in ``data`` and
    holds its key, whose parts are at most :data:`MAX_KEY_PART` bytes), else -1. The CRC is
    not checked here."""
    if off + _HEAD.size > len(data):
        return -1
    length, _, a, b, c = _HEAD.unpack_from(data, off)
    end: int = off + _FRAME.size + length
    if max(a, b, c) > MAX_KEY_PART or length < _LENS.size + a + b + c or end > len(data):
        return -1
    return end


def _intact(data: bytes, off: int) -> int:
    """The end of an intact record at ``off`` (frame consistent, CRC right), else -1."""
    end = _framed(data, off)
    if end < 0 or zlib.crc32(data[off + _FRAME.size:end]) != _U32.unpack_from(data, off + 4)[0]:
        return -1
    return end


def _resync(data: bytes, off: int) -> int:
    """The offset of the first intact record after a damaged one at ``off``, or -1.

    The first, not the one just after the damaged record's own length: a flipped bit in the
    length can make that length land on a later record's start and skip an intact one."""
    p = off + 1
    while p + _HEAD.size <= len(data):
        if data[p:p + 4] == b"\0\0\0\0":  # a record is never empty: skip runs of zeros
            found = _NONZERO.search(data, p)
            if found is None:
                return -1
            p = max(p + 1, found.start() - 3)
            continue
        if _intact(data, p) > 0:
            return p
        p += 1
    return -1


def _count_framed(data: bytes, start: int, stop: int) -> int:
    """How many consistent frames follow each other from ``start`` within ``stop`` (>= 1)."""
    count, off = 0, start
    while off < stop:
        end = _framed(data, off)
        if end < 0 or end > stop:
            break
        count, off = count + 1, end
    return max(1, count + (off < stop and count > 0))


def scan(data: bytes) -> Scan:
    """Every intact record of a journal file, resynchronising after damage.

    A record is intact when its frame is consistent and its CRC32 matches. After one that is
    not, the scan looks for the first intact record at any following byte (runs of zeros
    skipped). The zeros reserved
    after the last record end the file and are not damage.
    """
    records: list[tuple[int, int]] = []
    damaged: list[Damaged] = []
    off, size = 0, len(data)
    while off < size:
        end = _intact(data, off)
        if end > 0:
            records.append((off, end))
            off = end
            continue
        if _NONZERO.search(data, off) is None:
            break  # the reserved zeros after the last record
        nxt = _resync(data, off)
        if nxt < 0:
            stop = off + len(data[off:].rstrip(b"\0"))
            damaged.append(Damaged(off, stop - off, _count_framed(data, off, stop), True))
            break
        damaged.append(Damaged(off, nxt - off, _count_framed(data, off, nxt), False))
        off = nxt
    return Scan(records, damaged)




def group_records(data: bytes, skip: int = 0, verify: bool = True
                  ) -> tuple[dict[tuple[str, str, str], list[bytes]], int]:
    """The intact records in ``data`` after the first ``skip``, grouped by entity.

    Returns ``({(space, collection, id): [item, ...]}, records read)``, each list in journal
    order (the order a fold seals them in); stops at a torn tail. A fold of this process's
    own records, read back from memory, skips the CRC check (``verify=False``): this runs
    once per edit, in batches.
    """
    # The same walk over frames as read_records, fused with the grouping: a fold runs it
    # once per edit (through read_records' generator, with the CRC checked, a fold cost
    # 2.9 µs per edit; fused, and without the check on our own records, 1.8).
    grouped: dict[tuple[str, str, str], list[bytes]] = {}
    keys: dict[bytes, list[bytes]] = {}  # an entity's record prefix -> its list in grouped
    unpack, size = _HEAD.unpack_from, len(data)
    off = count = 0
    while off + _HEAD.size <= size:
        length, crc, a, b, c = unpack(data, off)
        start = off + _FRAME.size
        off = start + length
        if not length or off > size or (verify and zlib.crc32(data[start:off]) != crc):
            break
        count += 1
        if count <= skip:
            continue
        split = start + _LENS.size + a + b + c
        prefix = data[start:split]
        items = keys.get(prefix)
        if items is None:
            items = keys[prefix] = grouped.setdefault(decode_record(prefix)[0], [])
        items.append(data[split:off])
    return grouped, count


def group_intact(data: bytes, ranges: Iterable[tuple[int, int]]
                 ) -> tuple[dict[tuple[str, str, str], list[bytes]], list[tuple[int, int]]]:
    """The records at ``ranges`` of ``data`` (from :func:`scan`), grouped by entity as in
    :func:`group_records`, and the ranges whose key is not UTF-8 (not written by crdt-sync,
    whatever their CRC says)."""
    grouped: dict[tuple[str, str, str], list[bytes]] = {}
    bad: list[tuple[int, int]] = []
    for start, end in ranges:
        try:
            key, item = decode_record(data[start + _FRAME.size:end])
        except UnicodeDecodeError:
            bad.append((start, end))
            continue
        grouped.setdefault(key, []).append(item)
    return grouped, bad


def orphans(directory: Path) -> Iterator[tuple[str, int]]:
    """Journal files of dead processes, each locked by us until the fd is closed.

    Yields ``(name, fd)``; the caller must close the fd.
    """
    if not directory.exists():
        return
    for path in sorted(directory.glob("*.log")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if not path.exists():  # folded and removed by another process meanwhile
            os.close(fd)
            continue
        yield path.name, fd
