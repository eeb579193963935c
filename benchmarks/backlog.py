"""Backlog benchmark: one device's long offline period pushed to a relay in one ``crdt-sync sync``.

    python -m benchmarks.backlog [--envelopes N] [--rate R] [--repeat N] [--json]

A child process makes ``--envelopes`` small transactions on a fresh device, each sealed into
its own envelope (a device that edited offline). A ``crdt-sync relay`` process starts on a
fresh data directory, with its default settings unless ``--rate`` sets ``rate_envelopes``
(``0``: unlimited, to see what the relay itself can take), and one ``crdt-sync sync --json``
process pushes the backlog. Reported: the sync's wall time from start to exit and envelopes
per second; every run checks exit 0 and that the relay acknowledged every envelope as stored.
At the default settings the figure is the rate limit's (500 envelopes/s after a burst of
5,000), not the relay's capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter

from ._harness import BenchmarkError, make_console, median, print_json, print_machine, print_table

SPACE = "backlog"
#: The envelopes a space the device creates starts with: the genesis and its keys, the label.
CREATED = 2
#: rate_envelopes for ``--rate 0``: far above anything one device can send
UNLIMITED = 1e9
PROC_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Run:
    envelopes: int
    rate: str
    make_s: float
    sync_s: float
    per_second: float


def make_backlog(data: Path, count: int) -> None:
    """In this (child) process: ``count`` transactions, each sealed into its own envelope."""
    from crdt_sync import Replica

    with Replica(data, seal_interval=0) as replica:
        space = replica.space(SPACE)
        for i in range(count):
            space.put("log", f"e{i}", {"n": i})
            replica.seal()


def _cli() -> list[str]:
    return [sys.executable, "-m", "crdt_sync.cli"]


def one_run(work: Path, count: int, rate: float | None) -> Run:
    device, relay_data = work / "device", work / "relay"
    started = perf_counter()
    subprocess.run([sys.executable, "-m", "crdt_sync.benchmarks.backlog", "--make", str(device),
                    "--envelopes", str(count)], check=True, timeout=PROC_TIMEOUT)
    made = perf_counter() - started
    env = dict(os.environ)
    if rate is not None:
        env["CRDT_SYNC_RELAY_RATE_ENVELOPES"] = str(rate or UNLIMITED)
        if not rate:
            env["CRDT_SYNC_RELAY_RATE_BYTES"] = str(UNLIMITED)
    relay = subprocess.Popen([*_cli(), "relay", "--data", str(relay_data), "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert relay.stdout is not None
        line = relay.stdout.readline().split()
        if "listening" not in line:
            raise BenchmarkError(f"the relay did not start: {line}")
        url = line[-1]
        started = perf_counter()
        sync = subprocess.run([*_cli(), "sync", "--json", "--relay", url, "--data", str(device),
                               "--timeout", str(PROC_TIMEOUT)], capture_output=True, text=True,
                              timeout=PROC_TIMEOUT)
        took = perf_counter() - started
    finally:
        relay.terminate()
        relay.wait(timeout=30)
    if sync.returncode != 0:
        raise BenchmarkError(f"sync exited {sync.returncode}: {sync.stderr.strip()}")
    result = json.loads(sync.stdout)
    chain = count + CREATED  # the device's chain: its space's first envelopes, then the backlog
    if (result["sent"], result["stored"]) != (chain, chain):
        raise BenchmarkError(f"not every envelope was stored: {result}")
    label = "default" if rate is None else ("unlimited" if not rate else f"{rate:g}/s")
    return Run(count, label, made, took, count / took)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backlog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envelopes", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=None,
                        help="the relay's rate_envelopes (default: its default; 0: unlimited)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--make", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args(argv)
    if args.make is not None:
        make_backlog(args.make, args.envelopes)
        return 0
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="backlog-") as tmp:
            runs.append(one_run(Path(tmp), args.envelopes, args.rate))
    if args.json:
        print_json({"runs": [asdict(r) for r in runs],
                    "median_per_second": median([r.per_second for r in runs])})
        return 0
    console = make_console()
    print_machine(console)
    print_table(console, "crdt-sync sync of one device's backlog to a relay",
                ["envelopes", "relay rate", "make (s)", "sync (s)", "envelopes/s"],
                [[str(r.envelopes), r.rate, f"{r.make_s:.1f}", f"{r.sync_s:.2f}", f"{r.per_second:,.0f}"]
                 for r in runs])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
