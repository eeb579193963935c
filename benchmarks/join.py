"""Join benchmark (issue 12): a new device joins a space of ``--entities`` entities through a
relay, and is timed until it can read all of them.

    python -m crdt_sync.benchmarks.join [--entities 10000] [--batch 100] [--repeat 3]
                                        [--membership on|off] [--json]

The admin (a :class:`~crdt_sync.Replica` on SQLite) creates the space, writes the entities
(``--batch`` to a transaction; envelopes as the replica seals them), and syncs them to a relay (an in-process
:class:`~crdt_sync.relay.server.RelayServer` on loopback, its membership enforcement as
``--membership`` says). Each repeat, a fresh device is let in (``Replica.invite`` and
``Replica.join`` where the build has them, else ``Replica.grant`` to its known device id, the
admin syncing the grant up) and syncs once: the time is from the join to the end of that
session, then every entity is read back (timed apart), and the session's bytes are what
crossed the link. What is measured is the replica and the relay as they are, encryption
and membership checks included when the build has them.
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

from ._harness import (
    MB,
    BenchmarkError,
    dir_size,
    make_console,
    median,
    print_json,
    print_machine,
    print_table,
)


def entity_fields(k: int) -> dict[str, Any]:
    return {"name": f"asset {k}", "site": f"site-{k % 97}", "status": ("ok", "leaking", "replaced")[k % 3],
            "pressure_bar": round(1 + (k % 50) / 10, 1), "notes": f"inspected by crew {k % 13}"}


@dataclass(frozen=True, slots=True)
class Join:
    entities: int
    envelopes: int
    join_seconds: float  # join/grant to the end of the first session (everything received)
    read_seconds: float  # every entity read back once
    bytes_in: int  # what the new device received over the link
    bytes_out: int
    disk_bytes: int  # its data directory afterwards
    encrypted: bool


async def _sync(replica: Any, url: str) -> Any:
    from crdt_sync.transports.relay import sync_session

    outcome = await sync_session(replica, url, timeout=600.0)
    if not outcome.ok:
        raise BenchmarkError(f"the session did not sync: {outcome.closed}")
    return outcome


async def _run(args: argparse.Namespace, work: Path) -> tuple[list[Join], dict[str, Any]]:
    from crdt_sync import Replica
    from crdt_sync.relay.config import RelayConfig
    from crdt_sync.relay.server import RelayServer
    from crdt_sync.space_crypto import payload_kind

    relay = RelayServer(RelayConfig(data=work / "relay", host="127.0.0.1", port=0,
                                    membership=args.membership == "on"))
    await relay.start()
    admin = Replica(work / "admin")
    joins: list[Join] = []
    try:
        created = perf_counter()
        space = admin.create_space("site-42") if hasattr(admin, "create_space") else admin.space("site-42")
        for lo in range(0, args.entities, args.batch):
            with admin.transaction():
                for k in range(lo, min(lo + args.batch, args.entities)):
                    space.put("assets", f"asset-{k:05d}", entity_fields(k))
        admin.seal()
        create_s = perf_counter() - created
        pushed = perf_counter()
        up = await _sync(admin, relay.url)
        push_s = perf_counter() - pushed
        envelopes = sum(admin.version_vector(space.id).values())
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
                down = await _sync(device, relay.url)
                join_s = perf_counter() - started
                read = perf_counter()
                mine = device.space(space.id)
                got = sum(1 for k in range(args.entities) if mine.get("assets", f"asset-{k:05d}"))
                read_s = perf_counter() - read
                if got != args.entities:
                    raise BenchmarkError(f"the new device reads {got} of {args.entities} entities")
                joins.append(Join(args.entities, envelopes, join_s, read_s, down.bytes_in, down.bytes_out,
                                  dir_size(device.path), 3 in kinds))
            finally:
                device.close()
        setup = {"create_seconds": create_s, "push_seconds": push_s, "push_bytes": up.bytes_out,
                 "relay_disk_bytes": dir_size(work / "relay"), "payload_kinds": sorted(k for k in kinds if k)}
        return joins, setup
    finally:
        admin.close()
        await relay.stop(grace=10.0)


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


HEADERS = ["entities", "envelopes", "join s (median)", "best s", "entities/s", "read all s",
           "MB received", "bytes/entity", "device disk MB", "payloads"]


def _report(args: argparse.Namespace, joins: list[Join], setup: dict[str, Any]) -> None:
    if args.json:
        print_json({"benchmark": "join", "membership": args.membership, "setup": setup,
                    "runs": [asdict(j) for j in joins]})
        return
    console = make_console()
    j = joins[-1]
    join_s = median([x.join_seconds for x in joins])
    best = min(x.join_seconds for x in joins)
    rows = [[f"{j.entities:,}", f"{j.envelopes:,}", f"{join_s:.2f}", f"{best:.2f}",
             f"{j.entities / join_s:,.0f}", f"{median([x.read_seconds for x in joins]):.2f}",
             f"{median([x.bytes_in for x in joins]) / MB:.2f}",
             f"{median([x.bytes_in for x in joins]) / j.entities:,.0f}", f"{j.disk_bytes / MB:.1f}",
             "encrypted (kind 3)" if j.encrypted else "plaintext (kind 2)"]]
    print_table(console, f"join of a new device through a relay (membership {args.membership}); "
                         f"{args.repeat} join(s), {args.batch} entities a transaction", HEADERS, rows)
    console.print(f"admin: wrote the space in {setup['create_seconds']:.2f} s, pushed it in "
                  f"{setup['push_seconds']:.2f} s ({setup['push_bytes'] / MB:.2f} MB); relay disk "
                  f"{setup['relay_disk_bytes'] / MB:.1f} MB")
    print_machine(console)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m crdt_sync.benchmarks.join",
                                description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=100, help="entities per transaction (one envelope)")
    p.add_argument("--repeat", type=int, default=3, help="new devices that join, one after another")
    p.add_argument("--membership", choices=["on", "off"], default="on",
                   help="the relay's membership enforcement (on needs a build that encrypts)")
    p.add_argument("--tmpdir", type=Path, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if min(args.entities, args.batch, args.repeat) < 1:
        p.error("--entities, --batch and --repeat take positive numbers")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="crdt-join-", dir=args.tmpdir) as tmp:
        try:
            joins, setup = asyncio.run(_run(args, Path(tmp)))
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    _report(args, joins, setup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
