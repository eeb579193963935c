"""``crdt-sync demo``: a relay on SQLite and three field devices that edit offline, meet,
and converge: through the relay, over a direct link, and by a bundle on a USB stick.

Each device is a real replica in its own data directory, the relay a real server on a
loopback port, the direct meeting a real sync session over the in-memory transport (LAN and
BLE carry the same session). The clocks are simulated (a shared "field time" that advances
with the story) so the printed times read like a day's work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..hlc import hlc_to_datetime
from ..replica import Replica
from ..values import to_json

SPACE = "site-42"


class FieldClock:
    """Simulated wall time shared by the devices, in milliseconds."""

    def __init__(self) -> None:
        today = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
        self.ms = int(today.timestamp() * 1000)

    def at(self, hhmm: str) -> None:
        hours, minutes = (int(x) for x in hhmm.split(":"))
        base = datetime.fromtimestamp(self.ms / 1000, UTC).replace(hour=hours, minute=minutes)
        self.ms = max(self.ms, int(base.timestamp() * 1000))

    def __call__(self) -> int:
        return self.ms


def _digest(replica: Replica) -> str:
    space = replica.space(SPACE)
    state = {"entities": [[c, i, f] for c, i, f in space.rows()],
             "conflicts": [c.to_dict() for c in space.conflicts()], "vv": space.version_vector()}
    return hashlib.sha256(json.dumps(to_json(state), sort_keys=True).encode()).hexdigest()[:16]


def run_demo(root: Path | None, console: Console, as_json: bool = False) -> dict[str, Any]:
    return asyncio.run(_demo(root, console, as_json))


async def _demo(root: Path | None, console: Console, as_json: bool) -> dict[str, Any]:
    from crdt_sync.relay.config import RelayConfig
    from crdt_sync.relay.server import RelayServer
    from crdt_sync.transports.driver import run_session
    from crdt_sync.transports.memory import MemoryNetwork
    from crdt_sync.transports.relay import sync_session

    holder = None
    if root is None:
        holder = tempfile.TemporaryDirectory(prefix="crdt-sync-demo-")
        root = Path(holder.name)
    def say(text: str = "") -> None:
        if not as_json:
            console.print(text)

    clock = FieldClock()
    names = ["alice", "bob", "carol"]
    devices = {n: Replica(root / n, wall=clock) for n in names}
    log: list[str] = []

    def step(when: str, who: str, text: str) -> None:
        clock.at(when)
        log.append(f"{when} {who}: {text}")
        say(f"[dim]{when}[/]  [bold]{who:<5}[/] {text}")

    def carry(src: str, dst: str) -> None:
        source, target = devices[src], devices[dst]
        # what the target lacks, as a real device knows it from an earlier exchange
        bundle = source.export_bundle(SPACE, target.version_vector(SPACE))
        path = root / f"{src}-to-{dst}.bundle"
        path.write_bytes(bundle)
        result = target.import_bundle(path.read_bytes(), source=f"bundle from {src}")
        step(_now(clock), dst, f"imports {path.name} ({len(bundle)} bytes): "
             f"{result.applied} new envelope(s), {result.duplicates} already there")

    relay = RelayServer(RelayConfig(data=root / "relay", port=0))

    async def via_relay(who: str) -> None:
        outcome = await sync_session(devices[who], relay.url, timeout=30)
        step(_now(clock), who, f"syncs through the relay: {_moved(outcome)}")

    async def meet(one: str, other: str) -> None:
        link_a, link_b = MemoryNetwork(seed=42).pair()
        first, _ = await asyncio.gather(run_session(devices[one], link_a, timeout=30),
                                             run_session(devices[other], link_b, timeout=30))
        step(_now(clock), f"{one}+{other}", f"meet and sync directly: {_moved(first)}")

    try:
        await relay.start()
        say(f"[bold]A relay[/] on SQLite at {relay.url} and [bold]three field devices[/] in {root}")
        # the team's site: alice creates it and lets bob and carol in (a bundle carries
        # the grants and keys); each device then keeps and syncs it
        site = devices["alice"].space(SPACE).id
        devices["alice"].grant(site, [devices[n].device_id for n in names if n != "alice"], "write")
        welcome = devices["alice"].export_bundle(site)
        for n in names:
            if n != "alice":
                devices[n].import_bundle(welcome)
            say(f"  {n:<5} device {devices[n].device_id[:16]}..., keeps space {SPACE}")
        say("\n[bold underline]At the depot[/]")
        a = devices["alice"].space(SPACE)
        with a.transaction() as tx:
            tx.put("equipment", "pump-7", {"kind": "pump", "status": "ok", "pressure_bar": 4.2})
            tx.put("equipment", "valve-3", {"kind": "valve", "status": "ok"})
            tx.put("tasks", "T-1", {"title": "Inspect pump-7", "done": False, "assignee": "bob"})
            tx.entity("equipment", "pump-7").text("notes").append("Installed 2019.")
        step("08:00", "alice", "creates pump-7, valve-3 and task T-1")
        for who in names:
            await via_relay(who)
        await via_relay("alice")

        say("\n[bold underline]In the field, no network[/]")
        b, c = devices["bob"].space(SPACE), devices["carol"].space(SPACE)
        clock.at("09:10")
        with b.transaction() as tx:
            pump = tx.entity("equipment", "pump-7")
            pump.update({"status": "needs-repair", "pressure_bar": 1.3})
            pump.text("notes").append(" Bob: seal leaking.")
        step("09:10", "bob", "pump-7 status=needs-repair, pressure 1.3 bar, adds a note")
        clock.at("09:25")
        with c.transaction() as tx:
            pump = tx.entity("equipment", "pump-7")
            pump.set("status", "repaired")
            pump.text("notes").append(" Carol: seal replaced.")
            tx.put("inspections", "I-1", {"equipment": "pump-7", "result": "pass", "photos": 3})
        step("09:25", "carol", "pump-7 status=repaired, adds a note, files inspection I-1")
        clock.at("09:30")
        with a.transaction() as tx:
            tx.put("tasks", "T-1", {"done": True})
            tx.delete("equipment", "valve-3")
        step("09:30", "alice", "marks T-1 done, decommissions valve-3 (delete)")
        clock.at("09:40")
        b.put("tasks", "T-1", {"assignee": "carol"})
        step("09:40", "bob", "reassigns T-1 to carol")

        say("\n[bold underline]They meet again[/]")
        clock.at("11:00")
        await meet("bob", "carol")  # in the truck: a direct link (LAN or BLE in the field)
        clock.at("11:30")
        carry("carol", "alice")  # at the air-gapped plant room: a USB stick
        clock.at("12:00")
        say("\n[bold underline]Back in coverage[/]")
        for who in ["alice", "bob", "carol", "alice"]:
            await via_relay(who)

        digests = {n: _digest(r) for n, r in devices.items()}
        converged = len(set(digests.values())) == 1
        final = list(devices["alice"].space(SPACE).rows())
        conflicts = [c.to_dict() for c in devices["alice"].space(SPACE).conflicts()]
        if not as_json:
            _print_final(console, final, conflicts, devices, digests, converged)
        summary = {"devices": {n: r.device_id for n, r in devices.items()}, "steps": log,
                   "converged": converged, "digests": digests,
                   "entities": [{"collection": cl, "id": i, "fields": f} for cl, i, f in final],
                   "conflicts": conflicts}
        if as_json:
            print(json.dumps(to_json(summary)))
        if not converged:
            raise SystemExit(1)
        return summary
    finally:
        await relay.stop()
        for r in devices.values():
            r.close()
        if holder is not None:
            holder.cleanup()


def _moved(outcome: Any) -> str:
    got = sum(e.applied for e in outcome.events if type(e).__name__ == "Received")
    return f"{got} envelope(s) in, {outcome.bytes_in + outcome.bytes_out} bytes on the wire"


def _now(clock: FieldClock) -> str:
    return datetime.fromtimestamp(clock() / 1000, UTC).strftime("%H:%M")


def _print_final(console: Console, rows: list[tuple[str, str, dict[str, Any]]],
                 conflicts: list[dict[str, Any]], devices: dict[str, Replica],
                 digests: dict[str, str], converged: bool) -> None:
    table = Table(title=f"{SPACE} after the meeting (as every device sees it)")
    for col in ("collection", "id", "fields"):
        table.add_column(col, overflow="fold")
    for coll, ent, fields in rows:
        table.add_row(coll, ent, json.dumps(to_json(fields), ensure_ascii=False))
    console.print()
    console.print(table)
    console.print("[bold]Conflicts resolved[/] (later write by hybrid logical clock wins; "
                  "the loser stays listed until the field is written again):")
    names = {r.device_id: n for n, r in devices.items()}
    for item in conflicts:
        won = item["winner"]
        for lost in item["losers"]:
            console.print(
                f"  {item['collection']}/{item['id']}.{item['field']}: "
                f"{json.dumps(won['value'])} by {names.get(won['author'], '?')} at "
                f"{hlc_to_datetime(won['hlc']).strftime('%H:%M')} beat {json.dumps(lost['value'])} by "
                f"{names.get(lost['author'], '?')} at {hlc_to_datetime(lost['hlc']).strftime('%H:%M')}")
    console.print("valve-3 is gone everywhere (its tombstone merged); task T-1 keeps both "
                  "alice's done=true and bob's reassignment: different fields never conflict.")
    for n, d in digests.items():
        console.print(f"  {n:<5} state digest {d}")
    console.print("[bold green]converged: all three devices hold identical data[/]" if converged
                  else "[bold red]NOT converged[/]")
