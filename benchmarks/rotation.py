"""Key-rotation benchmark (issue 12, the core only): what one rotation costs to build and to open.

    python -m crdt_sync.benchmarks.rotation [--members 10,50,200] [--repeat N] [--json]

A rotation, as a writer builds it: a new epoch (``space_crypto.new_epoch``), one sealed box
per member (``space_crypto.seal_box`` to the member's Ed25519 device key), the signed keys
record(s) (``membership.make_keys``; a record is at most 64 KiB, so the boxes are split over
several keys records of the same epoch when they do not fit in one: docs/DESIGN.md,
"Records") and the membership payload(s) that carry them (``membership.encode_membership``).
Each member then decodes the payload (every record's signature checked), finds its box and
opens it, and checks the key against the epoch id.

This measures the pure core, in one process: no journal, no SQLite, no network. Times are
medians of ``--repeat`` rotations; the per-member open time is the median (and the slowest)
over every member of every repeat.

``--through-replica`` also measures rotation as an integrator meets it: a real admin replica
(on a temporary data directory) revokes a device in a space of ``n`` members
(``Replica.revoke``: the revocation and the new epoch's keys records in one envelope, sealed
and committed), and one real member replica takes the bundle of it
(``Replica.import_bundle``: verified, judged, its box opened, the key saved); then the admin
writes with the new epoch and the member reads it back.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import TypeVar

from crdt_sync import space_crypto
from crdt_sync.identity import Identity
from crdt_sync.membership import (
    MAX_RECORD_BYTES,
    MAX_RECORDS,
    Genesis,
    Keys,
    decode_membership,
    encode_membership,
    make_genesis,
    make_keys,
    space_id_of,
)
from crdt_sync.membership.records import MAX_BOXES

from ._harness import BenchmarkError, make_console, median, print_json, print_machine, print_table

T = TypeVar("T")
DEFAULT_MEMBERS = (10, 50, 200)
WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00.000Z: the records' HLC, fixed
#: canonical CBOR of one ``[recipient_key, sealed]`` entry of a keys record: array head (1),
#: bstr 32 (2 + 32), bstr of the sealed box (2 + BOX_BYTES; boxes are 24..255 bytes today)
BOX_ENTRY_BYTES = 1 + 2 + 32 + 2 + space_crypto.BOX_BYTES
#: room for everything of a keys record but its boxes: version, kind, space id (35), issuer
#: (34), epoch_n (<= 9), epoch_id (17), the boxes array head (<= 3), hlc (9), proof (34),
#: signature (66), the outer array head; rounded up
KEYS_OVERHEAD_BYTES = 256
#: the most boxes one keys record holds under the 64 KiB record bound
BOXES_PER_RECORD = min(MAX_BOXES, (MAX_RECORD_BYTES - KEYS_OVERHEAD_BYTES) // BOX_ENTRY_BYTES)


@dataclass(frozen=True, slots=True)
class Rotation:
    """One built rotation: what a writer would send."""

    epoch_n: int
    epoch_id: bytes
    epoch_key: bytes
    records: tuple[Keys, ...]
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """The medians for one space size."""

    members: int
    keys_records: int
    payloads: int
    payload_bytes: int  # all membership payloads of the rotation together
    build_seconds: float  # new epoch + boxes + keys records + payloads
    seal_seconds: float  # of which the boxes
    sign_seconds: float  # of which the keys records (encode + sign)
    decode_seconds: float  # decode_membership of the rotation's payload(s): once per member
    open_seconds_median: float  # one member: find its box in the decoded records, open it, check the id
    open_seconds_max: float
    opened: int  # members that opened their box to the rotation's key (must be ``members``)


def members_of(n: int) -> list[Identity]:
    """``n`` device identities with fixed seeds (so runs compare); the first is the admin."""
    return [Identity(i.to_bytes(4, "big") * 8) for i in range(1, n + 1)]


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def build_rotation(admin: Identity, space: str, proof: bytes, members: Sequence[Identity],
                   secret: bytes, epoch_n: int, hlc: int, *,
                   boxes_per_record: int = BOXES_PER_RECORD) -> tuple[Rotation, float, float]:
    """One rotation; also ``(seconds sealing, seconds signing)`` of it."""
    epoch_id, epoch_key = space_crypto.new_epoch()
    t0 = perf_counter()
    boxes = sorted((m.public_key, space_crypto.seal_box(m.public_key, epoch_key, secret)) for m in members)
    t1 = perf_counter()
    records = tuple(make_keys(admin, space, epoch_n, epoch_id, chunk, hlc, proof)
                    for chunk in _chunks(boxes, boxes_per_record))
    t2 = perf_counter()
    for record in records:
        if len(record.wire) > MAX_RECORD_BYTES:
            raise BenchmarkError(f"a keys record of {len(record.wire)} bytes is above {MAX_RECORD_BYTES}")
    payloads = tuple(encode_membership(group) for group in _chunks(records, MAX_RECORDS))
    return Rotation(epoch_n, epoch_id, epoch_key, records, payloads), t1 - t0, t2 - t1


def open_rotation(member: Identity, records: Sequence[Keys], epoch_id: bytes) -> bytes | None:
    """What a member does with the decoded records: find its box, open it, check the key is
    the one the epoch id names. ``None`` if no box is for it."""
    for record in records:
        if record.epoch_id != epoch_id:
            continue
        sealed = record.box_for(member.public_key)
        if sealed is not None:
            epoch_key, _secret = space_crypto.open_box(member, sealed)
            if space_crypto.epoch_id_of(epoch_key) != epoch_id:
                raise BenchmarkError("a box holds a key that is not the epoch's")
            return epoch_key
    return None


def measure(n: int, repeat: int, boxes_per_record: int = BOXES_PER_RECORD) -> Result:
    members = members_of(n)
    admin = members[0]
    genesis: Genesis = make_genesis(admin, WALL_MS << 16)
    space = space_id_of(genesis)
    secret = space_crypto.new_key()
    builds: list[float] = []
    seals: list[float] = []
    signs: list[float] = []
    decodes: list[float] = []
    opens: list[float] = []
    opened = n
    rotation: Rotation | None = None
    for r in range(repeat):
        start = perf_counter()
        rotation, seal_s, sign_s = build_rotation(admin, space, genesis.hash, members, secret,
                                                  r + 1, (WALL_MS + r) << 16,
                                                  boxes_per_record=boxes_per_record)
        builds.append(perf_counter() - start)
        seals.append(seal_s)
        signs.append(sign_s)
        start = perf_counter()
        decoded = [rec for payload in rotation.payloads for rec in decode_membership(payload)]
        decodes.append(perf_counter() - start)
        keys = [rec for rec in decoded if isinstance(rec, Keys)]
        good = 0
        for member in members:
            start = perf_counter()
            key = open_rotation(member, keys, rotation.epoch_id)
            opens.append(perf_counter() - start)
            good += key == rotation.epoch_key
        opened = min(opened, good)
    assert rotation is not None
    return Result(members=n, keys_records=len(rotation.records), payloads=len(rotation.payloads),
                  payload_bytes=sum(len(p) for p in rotation.payloads),
                  build_seconds=median(builds), seal_seconds=median(seals), sign_seconds=median(signs),
                  decode_seconds=median(decodes), open_seconds_median=median(opens),
                  open_seconds_max=max(opens), opened=opened)


@dataclass(frozen=True, slots=True)
class ReplicaResult:
    """Medians for one space size, through real replicas."""

    members: int
    revoke_seconds: float  # admin.revoke: records, boxes, seal, commit, key file saved
    bundle_bytes: int  # what the member is sent: the revocation envelope
    import_seconds: float  # member.import_bundle of it
    read_after: int  # rotations after which the member read the admin's next write (must be all)
    revoked_read: int  # ...and after which the revoked device could (must be 0)


def measure_replica(n: int, repeat: int, root: Path) -> ReplicaResult:
    """``n`` members: a real admin and member replica, and ``n - 2`` devices granted by id."""
    from crdt_sync import Replica
    from crdt_sync.errors import NotFound

    revokes: list[float] = []
    imports: list[float] = []
    sizes: list[int] = []
    read = revoked_read = 0
    with Replica(root / f"admin-{n}", seal_interval=0) as admin, \
            Replica(root / f"member-{n}", seal_interval=0) as member:
        space = admin.create_space(f"site-{n}").id
        others = [m.id for m in members_of(max(0, n - 2))]
        admin.grant(space, member.device_id)
        for chunk in _chunks(others, 50):
            admin.grant(space, list(chunk))
        member.import_bundle(admin.export_bundle(space))
        for r in range(repeat):
            leaving = Replica(root / f"leaving-{n}-{r}", seal_interval=0)
            try:
                admin.grant(space, leaving.device_id)
                leaving.import_bundle(admin.export_bundle(space))
                member.import_bundle(admin.export_bundle(space, since=member.version_vector(space)))
                start = perf_counter()
                admin.revoke(space, leaving.device_id)
                revokes.append(perf_counter() - start)
                bundle = admin.export_bundle(space, since=member.version_vector(space))
                sizes.append(len(bundle))
                start = perf_counter()
                member.import_bundle(bundle)
                imports.append(perf_counter() - start)
                admin.space(space).put("notes", f"after-{r}", {"rotation": r})
                member.import_bundle(admin.export_bundle(space, since=member.version_vector(space)))
                leaving.import_bundle(admin.export_bundle(space, since=leaving.version_vector(space)))
                read += member.space(space).get("notes", f"after-{r}") == {"rotation": r}
                with contextlib.suppress(NotFound):
                    revoked_read += leaving.space(space).get("notes", f"after-{r}") is not None
            finally:
                leaving.close()
    return ReplicaResult(n, median(revokes), int(median([float(x) for x in sizes])), median(imports),
                         read, revoked_read)


REPLICA_HEADERS = ("members", "revoke ms", "bundle bytes", "member import ms", "member reads next write",
                   "revoked device reads it")


def _replica_row(r: ReplicaResult, repeat: int) -> list[str]:
    return [str(r.members), f"{r.revoke_seconds * 1e3:.1f}", f"{r.bundle_bytes:,}",
            f"{r.import_seconds * 1e3:.1f}", f"{r.read_after}/{repeat}", f"{r.revoked_read}/{repeat}"]


HEADERS = ("members", "keys records", "payload bytes", "build ms", "of which boxes ms",
           "of which sign ms", "decode payload ms", "open own box µs (median)", "(slowest)", "opened")


def _row(r: Result) -> list[str]:
    return [str(r.members), str(r.keys_records), f"{r.payload_bytes:,}", f"{r.build_seconds * 1e3:.2f}",
            f"{r.seal_seconds * 1e3:.2f}", f"{r.sign_seconds * 1e3:.2f}", f"{r.decode_seconds * 1e3:.2f}",
            f"{r.open_seconds_median * 1e6:.0f}", f"{r.open_seconds_max * 1e6:.0f}",
            f"{r.opened}/{r.members}"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m crdt_sync.benchmarks.rotation",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--members", default=",".join(map(str, DEFAULT_MEMBERS)),
                   help="comma-separated space sizes (default 10,50,200)")
    p.add_argument("--repeat", type=int, default=5, help="rotations per size; medians are reported")
    p.add_argument("--boxes-per-record", type=int, default=BOXES_PER_RECORD, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--through-replica", action="store_true",
                   help="also revoke through real replicas (temporary data directories)")
    args = p.parse_args(argv)
    try:
        args.members = [int(x) for x in args.members.split(",") if x.strip()]
    except ValueError:
        p.error("--members takes comma-separated positive numbers")
    if args.repeat < 1 or not args.members or min(args.members) < 1 or args.boxes_per_record < 1:
        p.error("--repeat, --members and --boxes-per-record take positive numbers")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    try:
        results = [measure(n, args.repeat, args.boxes_per_record) for n in args.members]
        replica: list[ReplicaResult] = []
        if args.through_replica:
            with tempfile.TemporaryDirectory(prefix="crdt-rotation-") as tmp:
                replica = [measure_replica(max(2, n), args.repeat, Path(tmp)) for n in args.members]
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = [r.members for r in results if r.opened != r.members]
    failed += [r.members for r in replica if r.read_after != args.repeat or r.revoked_read]
    if args.json:
        print_json({"benchmark": "rotation", "repeat": args.repeat,
                    "boxes_per_record": args.boxes_per_record,
                    "results": [asdict(r) for r in results],
                    "through_replica": [asdict(r) for r in replica]})
    else:
        console = make_console()
        print_table(console, f"key rotation (core only, no replica): medians of {args.repeat} rotation(s); "
                             f"at most {args.boxes_per_record} boxes per keys record", HEADERS,
                    [_row(r) for r in results])
        if replica:
            print_table(console, f"key rotation through replicas (revoke, then a member imports it): "
                                 f"medians of {args.repeat}", REPLICA_HEADERS,
                        [_replica_row(r, args.repeat) for r in replica])
        print_machine(console)
    if failed:
        print(f"error: not every member opened its box, or a revoked device read on (sizes {failed})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
