"""Join benchmark (issues 12 and 14): a new device joins a space of ``--entities`` entities
through a relay, and is timed until it holds all of them, by the whole history or by the
admin's snapshot plus the tail.

    python -m crdt_sync.benchmarks.join [--entities 10000] [--batch 100] [--repeat 3]
                                        [--membership on|off] [--snapshot off|on|both]
                                        [--tail N] [--json]

The admin (a :class:`~crdt_sync.Replica` on SQLite) creates the space, writes the entities
(``--batch`` to a transaction; envelopes as the replica seals them), and syncs them to a relay (an in-process
:class:`~crdt_sync.relay.server.RelayServer` on loopback, its membership enforcement as
``--membership`` says). With ``--snapshot on`` the admin then makes a snapshot of the space
(``Replica.snapshot``) and the session pushes it to the relay (the run checks the relay's
verdict is ``stored``); ``--tail`` entities are then edited (in both modes, so the two hold
the same thing), and synced up. ``--snapshot both`` runs the two, each on its own admin and
relay built the same way, and prints them side by side.

Each repeat, a fresh device is let in (``Replica.invite`` and ``Replica.join`` where the
build has them, else ``Replica.grant`` to its known device id, the admin syncing the grant
up) and syncs with the relay until it holds the admin's version vector (one session unless
the relay held something back; at most three): the time is from the join to the end of the
last of those sessions, then every entity is read back (timed apart) and checked against
what the admin wrote, and the bytes are what crossed the link. With a snapshot, the device's
session must report it applied. Both modes must end with the same content (checked).
What is measured is the replica and the relay as they are, encryption and membership checks
included when the build has them.

The "encoded size" the bytes are compared with (issue 14: a first pull in at most 1.5x the
entities' encoded size) is the sum over entities of the canonical CBOR of
``[collection, entity id, fields]``, the fields as the device reads them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import cbor2

from ._harness import (
    MB,
    BenchmarkError,
    Target,
    dir_size,
    make_console,
    median,
    print_json,
    print_machine,
    print_table,
    print_targets,
)

COLLECTION = "assets"
#: Sessions a new device may take to converge (one, unless the relay held something back).
MAX_SESSIONS = 3
MODES = {"off": "full history", "on": "snapshot + tail"}


def entity_fields(k: int) -> dict[str, Any]:
    return {"name": f"asset {k}", "site": f"site-{k % 97}", "status": ("ok", "leaking", "replaced")[k % 3],
            "pressure_bar": round(1 + (k % 50) / 10, 1), "notes": f"inspected by crew {k % 13}"}


def tail_fields(k: int) -> dict[str, Any]:
    """What a tail edit writes into entity ``k`` (merged into its fields)."""
    return {"status": "replaced", "notes": f"re-inspected after the snapshot ({k})"}


def entity_id(k: int) -> str:
    return f"asset-{k:05d}"


def expected(entities: int, tail: int) -> dict[str, dict[str, Any]]:
    """Every entity's fields as the admin wrote them (the tail edits merged in)."""
    return {entity_id(k): {**entity_fields(k), **(tail_fields(k) if k < tail else {})}
            for k in range(entities)}


def encoded_size(content: dict[str, dict[str, Any]]) -> int:
    """The entities' encoded size: canonical CBOR of ``[collection, id, fields]``, summed."""
    return sum(len(cbor2.dumps([COLLECTION, key, fields], canonical=True)) for key, fields in content.items())


@dataclass(frozen=True, slots=True)
class Join:
    mode: str  # "off" (full history) or "on" (snapshot + tail)
    entities: int
    envelopes: int  # in the admin's version vector when the device joined
    sessions: int  # sessions to converge
    join_seconds: float  # join/grant to the end of the last session (converged)
    read_seconds: float  # every entity read back once
    bytes_in: int  # what the new device received over the link, all sessions
    bytes_out: int
    disk_bytes: int  # its data directory afterwards
    encrypted: bool
    snapshot: str  # the device's verdict on a snapshot it received ("" if none came)


@dataclass(frozen=True, slots=True)
class Setup:
    mode: str
    create_seconds: float
    push_seconds: float
    push_bytes: int
    snapshot_seconds: float  # Replica.snapshot
    snapshot_bytes: int  # the snapshot record
    snapshot_verdict: str  # the relay's
    tail_push_bytes: int  # the tail, and the snapshot with it
    relay_disk_bytes: int
    payload_kinds: list[int]


async def _sync(replica: Any, url: str) -> Any:
    from crdt_sync.transports.relay import sync_session

    outcome = await sync_session(replica, url, timeout=600.0)
    if not outcome.ok:
        raise BenchmarkError(f"the session did not sync: {outcome.closed}")
    return outcome


def _verdicts(outcome: Any, by_peer: bool) -> list[str]:
    from crdt_sync.protocol.events import SnapshotVerdict

    return [e.verdict for e in outcome.events if isinstance(e, SnapshotVerdict) and e.by_peer is by_peer]


def _covers(have: dict[str, int], target: dict[str, int]) -> bool:
    return all(have.get(author, 0) >= seq for author, seq in target.items())


async def _run_mode(args: argparse.Namespace, mode: str, work: Path,
                    want: dict[str, dict[str, Any]]) -> tuple[list[Join], Setup, dict[str, dict[str, Any]]]:
    """One mode on its own admin and relay: the joins, the set-up, and what the last new
    device read."""
    from crdt_sync import Replica
    from crdt_sync.relay.config import RelayConfig
    from crdt_sync.relay.server import RelayServer
    from crdt_sync.space_crypto import payload_kind

    relay = RelayServer(RelayConfig(data=work / "relay", host="127.0.0.1", port=0,
                                    membership=args.membership == "on"))
    await relay.start()
    admin = Replica(work / "admin")
    joins: list[Join] = []
    read: dict[str, dict[str, Any]] = {}
    try:
        created = perf_counter()
        space = admin.create_space("site-42") if hasattr(admin, "create_space") else admin.space("site-42")
        for lo in range(0, args.entities, args.batch):
            with admin.transaction():
                for k in range(lo, min(lo + args.batch, args.entities)):
                    space.put(COLLECTION, entity_id(k), entity_fields(k))
        admin.seal()
        create_s = perf_counter() - created
        pushed = perf_counter()
        up = await _sync(admin, relay.url)
        push_s = perf_counter() - pushed
        snap_s, snap_bytes, snap_verdict, tail_bytes = 0.0, 0, "", 0
        if mode == "on":
            made = perf_counter()
            snap_bytes = len(admin.snapshot(space.id))
            snap_s = perf_counter() - made
        if mode == "on" or args.tail:
            for lo in range(0, args.tail, args.batch):
                with admin.transaction():
                    for k in range(lo, min(lo + args.batch, args.tail)):
                        space.put(COLLECTION, entity_id(k), tail_fields(k))
            admin.seal()
            tail_up = await _sync(admin, relay.url)
            tail_bytes = tail_up.bytes_out
            if mode == "on":
                snap_verdict = ",".join(_verdicts(tail_up, by_peer=True))
                if snap_verdict != "stored":
                    raise BenchmarkError(f"the relay answered the admin's snapshot with {snap_verdict!r}")
        kinds = {payload_kind(e) for e in _payloads(work / "relay", space.id)}
        for rep in range(args.repeat):
            device = Replica(work / f"new-{rep}")
            try:
                started = perf_counter()
                if hasattr(admin, "invite"):
                    token = admin.invite(space.id, rights="write")  # type: ignore[attr-defined]
                    await _sync(admin, relay.url)
                    started = perf_counter()
                    device.join(token)  # type: ignore[attr-defined]
                else:
                    admin.grant(space.id, device.device_id, "write")
                    await _sync(admin, relay.url)
                    device.keep(space.id)
                target = admin.version_vector(space.id)
                downs: list[Any] = []
                while len(downs) < MAX_SESSIONS:
                    downs.append(await _sync(device, relay.url))
                    if _covers(device.version_vector(space.id), target):
                        break
                join_s = perf_counter() - started
                if not _covers(device.version_vector(space.id), target):
                    raise BenchmarkError(f"the new device holds {device.version_vector(space.id)} after "
                                         f"{MAX_SESSIONS} sessions, the admin {target}")
                got = [v for o in downs for v in _verdicts(o, by_peer=False)]
                if mode == "on" and "applied" not in got:
                    raise BenchmarkError(f"the new device did not start from the snapshot: verdicts {got}")
                if mode == "off" and got:
                    raise BenchmarkError(f"a snapshot came without --snapshot on: verdicts {got}")
                began = perf_counter()
                mine = device.space(space.id)
                read = {key: mine.get(COLLECTION, key) for key in want}
                read_s = perf_counter() - began
                if read != want:
                    wrong = [key for key in want if read[key] != want[key]]
                    raise BenchmarkError(f"the new device ({MODES[mode]}) reads {len(wrong)} of "
                                         f"{len(want)} entities otherwise than written, e.g. {wrong[:3]}")
                joins.append(Join(mode, args.entities, sum(target.values()), len(downs), join_s, read_s,
                                  sum(o.bytes_in for o in downs), sum(o.bytes_out for o in downs),
                                  dir_size(device.path), 3 in kinds, ",".join(got)))
            finally:
                device.close()
        setup = Setup(mode, create_s, push_s, up.bytes_out, snap_s, snap_bytes, snap_verdict, tail_bytes,
                      dir_size(work / "relay"), sorted(k for k in kinds if k))
        return joins, setup, read
    finally:
        admin.close()
        await relay.stop(grace=10.0)


async def _run(args: argparse.Namespace, work: Path) -> tuple[list[Join], list[Setup], int]:
    """Every mode asked for; the entities' encoded size. Raises BenchmarkError unless every
    mode's new devices ended with the same content."""
    want = expected(args.entities, args.tail)
    joins: list[Join] = []
    setups: list[Setup] = []
    reads: dict[str, dict[str, dict[str, Any]]] = {}
    for mode in ("off", "on") if args.snapshot == "both" else (args.snapshot,):
        j, s, reads[mode] = await _run_mode(args, mode, work / mode, want)
        joins += j
        setups.append(s)
    first, *others = reads.values()
    if any(other != first for other in others):
        raise BenchmarkError("full history and snapshot + tail ended with different content")
    return joins, setups, encoded_size(first)


def _payloads(relay_data: Path, space: str) -> list[bytes]:
    """Every payload the relay stores of ``space`` (what its operator would read)."""
    import contextlib
    import sqlite3

    from crdt_sync.envelope import open_envelope
    from crdt_sync.relay.sqlite_store import DB_NAME
    from crdt_sync.relay.storage import RELAY_DB

    uri = f"file:{relay_data / RELAY_DB / DB_NAME}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return [open_envelope(bytes(w)).payload
                for (w,) in db.execute("SELECT wire FROM envelopes WHERE space = ?", (space,))]


HEADERS = ["join by", "entities", "envelopes", "sessions", "join s med", "best s", "entities/s", "read s",
           "MB in", "B/entity", "x encoded", "disk MB"]


def _targets(joins: list[Join], encoded: int) -> list[Target]:
    """Issue 14's: a first pull of 10,000 entities in < 1 s, of 100,000 in < 10 s (1 s per
    10,000, scaled for other sizes), in bytes <= 1.5x the entities' encoded size."""
    out = []
    for mode in MODES:
        mine = [j for j in joins if j.mode == mode]
        if not mine:
            continue
        n = mine[0].entities
        scaled = "" if n in (10_000, 100_000) else ", scaled: 1 s per 10,000"
        out += [Target(f"{MODES[mode]}: first pull of {n:,} entities{scaled}",
                       median([j.join_seconds for j in mine]), n / 10_000, "s"),
                Target(f"{MODES[mode]}: bytes received / entities' encoded size ({encoded:,} B)",
                       median([j.bytes_in for j in mine]) / encoded, 1.5, "x")]
    return out


def _report(args: argparse.Namespace, joins: list[Join], setups: list[Setup], encoded: int) -> None:
    targets = _targets(joins, encoded)
    if args.json:
        print_json({"benchmark": "join", "membership": args.membership, "snapshot": args.snapshot,
                    "tail": args.tail, "encoded_bytes": encoded, "content_equal": True,
                    "setup": [asdict(s) for s in setups], "runs": [asdict(j) for j in joins],
                    "targets": [t.as_dict() for t in targets]})
        return
    console = make_console()
    payloads = "encrypted (kind 3)" if all(j.encrypted for j in joins) else "plaintext (kind 2)"
    rows = []
    for mode in MODES:
        mine = [j for j in joins if j.mode == mode]
        if not mine:
            continue
        j = mine[-1]
        join_s = median([x.join_seconds for x in mine])
        bytes_in = median([x.bytes_in for x in mine])
        rows.append([MODES[mode], f"{j.entities:,}", f"{j.envelopes:,}", f"{max(x.sessions for x in mine)}",
                     f"{join_s:.2f}", f"{min(x.join_seconds for x in mine):.2f}",
                     f"{j.entities / join_s:,.0f}", f"{median([x.read_seconds for x in mine]):.2f}",
                     f"{bytes_in / MB:.2f}", f"{bytes_in / j.entities:,.0f}", f"{bytes_in / encoded:.2f}",
                     f"{j.disk_bytes / MB:.1f}"])
    print_table(console, f"join of a new device through a relay (membership {args.membership}); "
                         f"{args.repeat} join(s) each, {args.batch} entities a transaction, "
                         f"tail {args.tail} edits; payloads {payloads}", HEADERS, rows)
    for s in setups:
        line = (f"admin ({MODES[s.mode]}): wrote the space in {s.create_seconds:.2f} s, pushed it in "
                f"{s.push_seconds:.2f} s ({s.push_bytes / MB:.2f} MB)")
        if s.mode == "on":
            line += (f"; snapshot made in {s.snapshot_seconds:.2f} s ({s.snapshot_bytes / MB:.2f} MB), "
                     f"pushed with the tail ({s.tail_push_bytes / MB:.2f} MB), relay: {s.snapshot_verdict}")
        elif s.tail_push_bytes:
            line += f"; tail pushed ({s.tail_push_bytes / MB:.2f} MB)"
        console.print(line + f"; relay disk {s.relay_disk_bytes / MB:.1f} MB")
    modes = " and ".join(MODES[m] for m in MODES if any(j.mode == m for j in joins))
    console.print(f"content: every new device by {modes} read all {joins[0].entities:,} entities as written "
                  f"(content equal); entities' encoded size {encoded:,} bytes "
                  f"(canonical CBOR of \\[collection, id, fields], summed)")
    print_targets(console, targets)
    print_machine(console)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m crdt_sync.benchmarks.join",
                                description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100, help="entities per transaction (one envelope)")
    p.add_argument("--repeat", type=int, default=3, help="new devices that join, one after another")
    p.add_argument("--membership", choices=["on", "off"], default="on",
                   help="the relay's membership enforcement (on needs a build that encrypts)")
    p.add_argument("--snapshot", choices=["off", "on", "both"], default="off",
                   help="off: the new device gets the whole history (as before); on: the admin's "
                        "snapshot is on the relay first, the device gets it and the tail; both: side by side")
    p.add_argument("--tail", type=int, default=None,
                   help="entities edited after the snapshot point, in both modes (default: 0 with "
                        "--snapshot off, else --batch)")
    p.add_argument("--tmpdir", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.entities, args.batch, args.repeat) < 1:
        p.error("--entities, --batch and --repeat take positive numbers")
    if args.tail is None:
        args.tail = 0 if args.snapshot == "off" else min(args.batch, args.entities)
    if not 0 <= args.tail <= args.entities:
        p.error("--tail takes 0 .. --entities")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="crdt-join-", dir=args.tmpdir) as tmp:
        try:
            joins, setups, encoded = asyncio.run(_run(args, Path(tmp)))
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    _report(args, joins, setups, encoded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
