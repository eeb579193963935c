"""The parent's side of one server's run: start it, run the generators, measure, stop it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .._harness import run_child
from ._load import MODULE, OURS, SERVERS, WAIT_LIMIT, Load, load_dict
from ._measure import summarise, summarise_cprofile, summarise_py_spy
from ._servers import Sampler, hwm_mb, py_spy, start_server, stop_server, wait_quiet


def _barrier(futures: list[Future[dict[str, Any]]], barrier: Path, idle: float) -> float:
    """Wait until every generator is connected, then tell them when to start."""
    deadline = time.monotonic() + WAIT_LIMIT * 2
    while time.monotonic() < deadline:
        ready = [barrier / f"ready-{i}" for i in range(len(futures))]
        if all(p.exists() for p in ready) or any(f.done() for f in futures):
            break
        time.sleep(0.05)
    t_go = time.monotonic() + idle
    tmp = barrier / "go.tmp"
    tmp.write_text(repr(t_go))
    tmp.rename(barrier / "go")
    return t_go


def run_server(server: str, load: Load, args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    profile = args.profile if server in OURS and server != "crdt-sync-baseline" else None
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else math.nan
    with tempfile.TemporaryDirectory(prefix="relay-load-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        barrier = work / "barrier"
        barrier.mkdir()
        proc, port, log = start_server(server, work, profile, args.baseline)
        sampler = Sampler(proc.pid)
        sampler.start()
        spy: threading.Thread | None = None
        try:
            with ThreadPoolExecutor(args.generators) as pool:
                futures = [pool.submit(run_child, MODULE, [
                    "--child", server if server in OURS else "pycrdt-websocket",
                    "--port", str(port), "--index", str(i), "--generators", str(args.generators),
                    "--barrier", str(barrier), "--load", json.dumps(load_dict(load))],
                    description=f"{SERVERS[server]} (generator {i + 1}/{args.generators})", total=100,
                    progress=progress) for i in range(args.generators)]
                t_go = _barrier(futures, barrier, load.idle)
                if profile == "py-spy":
                    spy = py_spy(proc.pid, t_go + load.warmup, load.duration, work / "py-spy.txt")
                results = [f.result() for f in futures]
            hwm = hwm_mb(proc.pid)
            if spy is not None:
                spy.join(timeout=load.duration + 90)
        finally:
            sampler.stop()
            stop_server(proc)
        summary = summarise(server, load, results, sampler, hwm, t_go, quiet)
        summary["server_log_tail"] = log.read_text()[-2000:] if proc.returncode not in (0, -15) else ""
        if profile == "py-spy" and (work / "py-spy.txt").exists():
            summary["profile"] = summarise_py_spy(work / "py-spy.txt")
            _keep(work / "py-spy.txt", args.profile_out, "relay-py-spy.txt")
        elif profile == "cprofile" and (work / "relay.prof").exists():
            summary["profile"] = summarise_cprofile(work / "relay.prof")
            _keep(work / "relay.prof", args.profile_out, "relay.prof")
        return summary


def _keep(path: Path, directory: Path | None, name: str) -> None:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(path.read_bytes())
