"""LAN benchmark: two daemons (:class:`crdt_sync.transports.daemon.Peer`) on loopback.

    python -m benchmarks.lan [--entities N] [--rate R] [--seconds S] [--json]

* **converge**: device A holds ``--entities`` edits, B as many of its own (one envelope each,
  as after a day offline); the clock starts before either daemon starts and stops when both
  hold everything. B dials A as a static peer (loopback carries no multicast).
* **live**: both daemons connected; A makes ``--rate`` edits per second for ``--seconds``
  seconds through the ordinary write path (the replica seals after its debounce); for each
  edit, the time from the write returning on A to B's observer seeing it. p50 and p99.

Both devices run in this one process and one event loop: every figure includes both ends'
CPU, on one core. Each run uses fresh data directories.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from ._harness import make_console, print_json, print_machine, print_table, share

SPACE = "bench-lan"
LOOP = "127.0.0.1"


def _fill(replica: Any, prefix: str, count: int) -> None:
    sp = replica.space(SPACE)
    for i in range(count):
        sp.put("equipment", f"{prefix}-{i}", {"n": i, "by": prefix})
        replica.seal()


def _total(replica: Any) -> int:
    return sum(replica.version_vector(SPACE).values())


async def _until(replica: Any, done: Any, limit: float) -> None:
    changed = asyncio.Event()
    stop = replica.observe(lambda _c: changed.set())
    try:
        async with asyncio.timeout(limit):
            while not done():
                changed.clear()
                await changed.wait()
    finally:
        stop()


async def converge(work: Path, entities: int) -> dict[str, float]:
    from crdt_sync import Replica
    from crdt_sync.transports.daemon import Peer

    with Replica(work / "a", seal_interval=0) as a, Replica(work / "b", seal_interval=0) as b:
        share(a, b, name=SPACE)
        setup = _total(a)  # the space's set-up (genesis and keys, label, grant): both hold it
        for replica, name in ((a, "a"), (b, "b")):
            _fill(replica, name, entities)
        want = setup + 2 * entities
        started = time.perf_counter()
        async with _listener(a) as pa, \
                Peer(b, interfaces=[LOOP], static_peers=[(LOOP, pa.lan_transport.port)]):
            await asyncio.gather(_until(a, lambda: _total(a) >= want, 300),
                                 _until(b, lambda: _total(b) >= want, 300))
            took = time.perf_counter() - started
        return {"entities_each": entities, "converge_s": took, "envelopes_per_s": 2 * entities / took}


def _listener(replica: Any) -> Any:
    from crdt_sync.transports.daemon import Peer
    from crdt_sync.transports.lan import LanTransport

    return Peer(replica, transports=[lambda serve: LanTransport(replica, [LOOP], mdns=False, serve=serve)])


async def live(work: Path, rate: float, seconds: float) -> dict[str, float]:
    from crdt_sync import Replica
    from crdt_sync.transports.daemon import Peer

    with Replica(work / "la") as a, Replica(work / "lb") as b:
        space = share(a, b, name=SPACE)
        written: dict[str, float] = {}
        latencies: list[float] = []
        done = asyncio.Event()
        count = int(rate * seconds)

        def seen(changes: list[Any]) -> None:
            now = time.perf_counter()
            for change in changes:
                at = written.pop(change.id, None)
                if at is not None and change.origin == "remote":
                    latencies.append(now - at)
            if len(latencies) >= count:
                done.set()
        b.observe(seen, space)
        async with _listener(a) as pa, \
                Peer(b, interfaces=[LOOP], static_peers=[(LOOP, pa.lan_transport.port)]) as pb:
            async with asyncio.timeout(30):
                await pb.wait_connected(1)
                await pa.wait_connected(1)
            sp = a.space(SPACE)
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i in range(count):
                await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
                key = f"live-{i}"
                written[key] = time.perf_counter()
                sp.put("equipment", key, {"n": i})
            async with asyncio.timeout(30):
                await done.wait()
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000
        return {"edits": count, "rate_per_s": rate, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                "max_ms": latencies[-1] * 1000}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lan", description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=1000, help="edits on each device before they meet")
    p.add_argument("--rate", type=float, default=10.0, help="live edits per second")
    p.add_argument("--seconds", type=float, default=60.0, help="how long the live edits go on")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"converge": asyncio.run(converge(Path(tmp), args.entities)),
                  "live": asyncio.run(live(Path(tmp), args.rate, args.seconds))}
    if args.json:
        print_json(result)
        return 0
    console = make_console()
    c, lv = result["converge"], result["live"]
    print_table(console, "LAN on loopback: two daemons", ["measure", "value", "target"], [
        (f"start to converged, {c['entities_each']:.0f} envelopes each", f"{c['converge_s']:.2f} s", "< 2 s"),
        ("catch-up rate", f"{c['envelopes_per_s']:.0f} envelopes/s", ""),
        (f"live edit visible on B, p50 ({lv['edits']:.0f} edits at {lv['rate_per_s']:g}/s)",
         f"{lv['p50_ms']:.1f} ms", ""),
        ("live edit visible on B, p99", f"{lv['p99_ms']:.1f} ms", "< 100 ms"),
        ("live edit visible on B, max", f"{lv['max_ms']:.1f} ms", ""),
    ])
    print_machine(console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
