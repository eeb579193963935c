"""The relay load benchmark's command line: options and defaults, and which process this is
(the parent, a load generator, or pycrdt-websocket's server).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from .._harness import BenchmarkError, make_console, progress_display
from ._generator import child
from ._load import MODULE, SERVERS, Load
from ._report import report
from ._run import run_server
from ._servers import serve_ypy

#: The first line of the package's docstring, which ``--help`` shows.
DESCRIPTION = ("Relay load benchmark: many device connections through a relay, side by side with "
               "pycrdt-websocket's server under the same load.")


# -- command line ------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=DESCRIPTION)
    p.add_argument("--devices", type=int, default=None, help="concurrent device connections (default 1000)")
    p.add_argument("--team-size", type=int, default=10, help="devices per team space (default 10)")
    p.add_argument("--typing-devices", type=int, default=None,
                   help="devices of the typing space (default 64)")
    p.add_argument("--typing-rate", default="6",
                   help="edits per second per typing device; a comma-separated list runs each in turn")
    p.add_argument("--team-rate", type=float, default=0.2, help="edits per second per team device")
    p.add_argument("--duration", type=float, default=None, help="measured seconds (default 60)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 5)")
    p.add_argument("--drain", type=float, default=10.0, help="seconds to wait for late deliveries")
    p.add_argument("--idle", type=float, default=3.0, help="seconds connected and idle before the load")
    p.add_argument("--generators", type=int, default=1, help="load generator processes (default 1)")
    p.add_argument("--servers", default="crdt-sync,pycrdt-websocket",
                   help=f"comma-separated, in order: {', '.join(SERVERS)}")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="a checkout of another commit: the crdt-sync-baseline server runs its relay "
                        "(compare two versions of the relay in one run)")
    p.add_argument("--quick", action="store_true", help="a small smoke run (100 devices, 10 s)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="before each server, wait up to S seconds for other work on the machine to stop")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--save", type=Path, default=None, metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--profile", choices=["py-spy", "cprofile"], default=None,
                   help="profile the crdt-sync relay during the measured window")
    p.add_argument("--profile-out", type=Path, default=None, metavar="DIR", help="keep the raw profile here")
    p.add_argument("--tmpdir", type=Path, default=None, help="where the servers' data directories go")
    # the children's side: set by the parent only
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--serve-ypy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ystore", type=Path, help=argparse.SUPPRESS)
    for hidden in ("--port", "--index"):
        p.add_argument(hidden, type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--load", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    quick = args.quick
    args.devices = args.devices or (100 if quick else 1000)
    args.typing_devices = args.typing_devices if args.typing_devices is not None else (16 if quick else 64)
    args.duration = args.duration or (10.0 if quick else 60.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 5.0)
    if quick and args.drain == 10.0:
        args.drain = 5.0
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if not servers or any(s not in SERVERS for s in servers):
        p.error(f"--servers takes some of: {', '.join(SERVERS)}")
    args.server_list = servers
    if args.typing_devices > args.devices or args.team_size < 2 or args.devices < 2:
        p.error("need --devices >= --typing-devices, --devices >= 2 and --team-size >= 2")
    try:
        args.typing_rates = [float(x) for x in str(args.typing_rate).split(",") if x.strip()]
    except ValueError:
        p.error("--typing-rate takes numbers, comma-separated")
    if (not args.typing_rates or min(*args.typing_rates, args.team_rate, args.duration) <= 0
            or args.generators < 1):
        p.error("rates, --duration and --generators must be positive")
    if args.generators > 1 and args.typing_devices == 0:
        p.error("several generators need a typing space for the first one")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.serve_ypy:
        asyncio.run(serve_ypy(args.ystore))
        return 0
    if args.child:
        return child(args)
    loads = [Load(devices=args.devices, team_size=args.team_size, typing_devices=args.typing_devices,
                  typing_rate=rate, team_rate=args.team_rate, warmup=args.warmup, duration=args.duration,
                  drain=args.drain, idle=args.idle, seed=args.seed) for rate in args.typing_rates]
    results = []
    try:
        with progress_display(make_console(stderr=True)) as progress:
            for load in loads:  # servers alternate, so drift in machine load hits all alike
                for server in args.server_list:
                    results.append({"typing_rate": load.typing_rate,
                                    **run_server(server, load, args, progress)})
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report(args, loads, results)
    return 0
