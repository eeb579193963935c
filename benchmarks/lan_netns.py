"""LAN benchmark between two network namespaces: discovery by mDNS only, real processes.

    sudo python -m benchmarks.lan_netns [--entities N] [--seconds S] [--rate R] [--json]

Needs root (``ip netns``, ``tc``). Two namespaces joined by a veth pair, each device a process
(:mod:`benchmarks._lan_node`) running the daemon pinned to its veth address, with mDNS only.

* **converge**: A and B hold 100 edits each; from the earlier daemon start to the later
  convergence (wall clock, shared by both processes).
* **live**: then A makes ``--rate`` edits per second for ``--seconds``; for each, the time
  from its write on A to visible on B. p50 and p99.
* **catch-up**: A holds ``--entities`` edits (one envelope each), B none; from B's first
  envelope to B holding all, side by side with raw WebSocket throughput (aiohttp, 64 KiB
  messages) of as many bytes as A's export bundle of them, on the same link: unshaped, and
  shaped to 20 Mbit/s with ``tc tbf`` on both ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ._harness import BenchmarkError, make_console, print_json, print_machine, print_table, share

SPACE = "bench-lan"
NS = (f"cslb-a{os.getpid()}", f"cslb-b{os.getpid()}")
ADDR = ("10.234.1.1", "10.234.1.2")
DEV = ("cslbv0", "cslbv1")
TIMEOUT = 600.0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def setup(shape: str | None) -> None:
    for ns in NS:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    _ip("link", "add", DEV[0], "netns", NS[0], "type", "veth", "peer", "name", DEV[1], "netns", NS[1])
    for ns, dev, addr in zip(NS, DEV, ADDR, strict=True):
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
        _ip("-n", ns, "link", "set", dev, "up")
        if shape:
            subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", shape,
                            "burst", "32kbit", "latency", "50ms"], check=True, capture_output=True)


def teardown() -> None:
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"}


def _spawn(ns: str, module: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", module, *args],
                            env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen[str], key: str) -> Any:
    assert proc.stdout is not None
    while line := proc.stdout.readline():
        if line.startswith("{") and key in (msg := json.loads(line)):
            return msg
    err = proc.stderr.read() if proc.stderr else ""
    raise BenchmarkError(f"no {key!r} from {proc.args!r}: {err[-2000:]}")


def _prepare(work: Path, a_count: int, b_count: int) -> tuple[Path, Path, int, int]:
    from crdt_sync import Replica

    paths = (work / "a", work / "b")
    with Replica(paths[0], seal_interval=0) as a, Replica(paths[1], seal_interval=0) as b:
        space = share(a, b, name=SPACE)
        setup = sum(a.version_vector(space).values())  # genesis and keys, label, grant: both hold it
        for replica, count, name in ((a, a_count, "a"), (b, b_count, "b")):
            sp = replica.space(space)
            for i in range(count):
                sp.put("equipment", f"{name}-{i}", {"n": i, "by": name})
                replica.seal()
        size = len(a.export_bundle(space))
    return paths[0], paths[1], setup + a_count + b_count, size


def run_pair(work: Path, a_count: int, b_count: int, live: int, rate: float) -> dict[str, Any]:
    a_path, b_path, want, size = _prepare(work, a_count, b_count)
    common = ["--space", SPACE, "--want", str(want), "--live", str(live), "--rate", str(rate)]
    procs = [_spawn(NS[0], "benchmarks._lan_node", "--data", str(a_path), "--address", ADDR[0],
                    "--role", "writer", *common),
             _spawn(NS[1], "benchmarks._lan_node", "--data", str(b_path), "--address", ADDR[1],
                    "--role", "reader", *common)]
    try:
        started = [_line(p, "started")["started"] for p in procs]
        done = [_line(p, "converged") for p in procs]
        result: dict[str, Any] = {
            "converge_s": max(d["converged"] for d in done) - min(started),
            "catch_up_s": done[1]["converged"] - done[1]["first"], "bytes": size,
            "envelopes": a_count + b_count}
        if live:
            lat = sorted(x * 1000 for x in _line(procs[1], "latencies")["latencies"])
            result |= {"live_edits": len(lat), "p50_ms": _pct(lat, 0.5), "p99_ms": _pct(lat, 0.99),
                       "max_ms": lat[-1]}
        return result
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _pct(ordered: list[float], p: float) -> float:
    """The nearest-rank percentile of a sorted list."""
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def raw_ws(total: int) -> float:
    server = _spawn(NS[0], "benchmarks._raw_ws", "serve", ADDR[0], "7600", str(total))
    try:
        _line(server, "listening")
        client = subprocess.run(["ip", "netns", "exec", NS[1], sys.executable, "-m", "benchmarks._raw_ws",
                                 "fetch", f"ws://{ADDR[0]}:7600/raw"], env=_env(), capture_output=True,
                                text=True, timeout=TIMEOUT, check=True)
        got = json.loads(client.stdout.strip().splitlines()[-1])
        if got["bytes"] != total:
            raise BenchmarkError(f"raw WebSocket moved {got['bytes']} of {total} bytes")
        return float(got["seconds"])
    finally:
        server.kill()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lan_netns", description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--shape", default="20mbit", help="tc tbf rate of the shaped catch-up run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in (("unshaped", None), ("shaped", args.shape)):
            teardown()
            setup(shape)
            try:
                if name == "unshaped":
                    result["meet"] = run_pair(Path(tmp) / "meet", 100, 100, int(args.rate * args.seconds),
                                              args.rate)
                run = run_pair(Path(tmp) / name, args.entities, 0, 0, args.rate)
                run["raw_s"] = raw_ws(run["bytes"])
                run["ratio"] = run["raw_s"] / run["catch_up_s"]
                result[name] = run
            finally:
                teardown()
    if args.json:
        print_json(result)
        return 0
    console = make_console()
    m = result["meet"]
    rows = [("two daemons start to converged (100 edits each, mDNS only)",
             f"{m['converge_s']:.2f} s", "< 2 s"),
            (f"live edit visible, p50 ({m['live_edits']} edits at {args.rate:g}/s)",
             f"{m['p50_ms']:.1f} ms", ""),
            ("live edit visible, p99", f"{m['p99_ms']:.1f} ms", "< 100 ms"),
            ("live edit visible, max", f"{m['max_ms']:.1f} ms", "")]
    for name in ("unshaped", "shaped"):
        r = result[name]
        label = "unshaped" if name == "unshaped" else f"tc tbf {args.shape}"
        rows.append((f"catch-up {r['envelopes']} envelopes ({r['bytes'] / 1e6:.1f} MB), {label}",
                     f"{r['catch_up_s']:.2f} s vs raw {r['raw_s']:.2f} s: {r['ratio']:.2f} of raw",
                     "≥ 0.8" if name == "shaped" else ""))
    print_table(console, "LAN between two namespaces", ["measure", "value", "target"], rows)
    print_machine(console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
