"""The load generator process: prepares its devices, connects them, sends every edit on
schedule and counts what arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
from pathlib import Path
from typing import Any

from .._harness import BenchmarkError, ChildChannel
from ._devices import Device, Space, Stats, relay_devices, seed_relay, y_devices
from ._load import OURS, WAIT_LIMIT, Histogram, Load
from ._spaces import MODES
from ._wsclient import WsConn

#: Connections opened at once while ramping up.
CONNECT_CONCURRENCY = 64
CONNECT_TIMEOUT = 30.0


# -- the generator process ----------------------------------------------------------------------
def _assigned(load: Load, generators: int, index: int) -> list[tuple[str, str, float, list[int]]]:
    """The spaces generator ``index`` runs: the typing space on the first, teams on the rest."""
    spaces = load.spaces()
    typing = [s for s in spaces if s[1] == "typing"]
    teams = [s for s in spaces if s[1] == "team"]
    if generators == 1:
        return spaces
    if index == 0:
        return typing
    return teams[index - 1::generators - 1]


async def _connect(device: Device, port: int, sem: asyncio.Semaphore) -> None:
    loop = asyncio.get_running_loop()
    async with sem:
        conn = WsConn("127.0.0.1", port, device.path, device.start, device.receive, device.on_lost)
        device.conn = conn
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await loop.create_connection(lambda: conn, "127.0.0.1", port)
            await conn.opened
            await device.ready


async def ramp(devices: list[Device], port: int) -> tuple[list[Device], list[BaseException | None]]:
    """Connect every device, ``CONNECT_CONCURRENCY`` at a time; returns them in the order
    connected, with an exception for each that failed.

    The first member of each space joins alone: pycrdt-websocket 0.16 hangs a client that
    joins a room while another client's join is still creating it (see docs/BENCHMARKS.md).
    """
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    firsts = [d for d in devices if d.pos == 0]
    rest = [d for d in devices if d.pos != 0]
    outcomes: list[BaseException | None] = []
    for group in (firsts, rest):
        outcomes += await asyncio.gather(*(_connect(d, port, sem) for d in group), return_exceptions=True)
    return firsts + rest, outcomes


def _wait_file(path: Path, limit: float) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise BenchmarkError(f"no {path.name} from the parent within {limit:g} s")


async def generate(load: Load, server: str, port: int, index: int, generators: int,
                   barrier: Path, channel: ChildChannel) -> dict[str, Any]:
    rng = random.Random(load.seed * 1000 + 7)
    all_spaces = [Space(n, k, r, m, load, rng) for n, k, r, m in load.spaces()]
    mine = {n for n, _, _, _ in _assigned(load, generators, index)}
    spaces = [s for s in all_spaces if s.name in mine]
    stats = Stats()
    t0 = time.monotonic()
    if server in OURS:
        devices, passes = relay_devices(load, spaces, stats, sealed=MODES[server] is not None)
        prepare_s = time.monotonic() - t0
        for firsts in passes:  # (sealed spaces: the admins' genesis and grants first)
            await seed_relay(f"ws://127.0.0.1:{port}", firsts)
    else:
        devices = y_devices(spaces, stats)
        prepare_s = time.monotonic() - t0
    channel.progress(5)

    # ramp up: every device connects and completes its handshake
    t_connect = time.monotonic()
    devices, outcomes = await ramp(devices, port)
    connect_s = time.monotonic() - t_connect
    established = 0
    for device, outcome in zip(devices, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            stats.error("connect failed", f"{type(outcome).__name__}: {outcome}")
            if device.conn is not None:
                device.conn.close()
        else:
            established += 1
            device.space.connected[device.pos] = True
    channel.progress(20)

    # the parent starts everyone at the same moment, after an idle period it measures
    (barrier / f"ready-{index}").write_text(json.dumps({"t": time.monotonic()}))
    t_go = float(await asyncio.to_thread(_wait_file, barrier / "go", WAIT_LIMIT))
    stats.t_go = t_go
    stats.window = (t_go + load.warmup, t_go + load.end)

    # every edit, in time order
    plan: list[tuple[float, int, int]] = []
    for i, device in enumerate(devices):
        if device.space.connected[device.pos]:
            sp, p = device.space, device.pos
            plan.extend((t_go + sp.phase[p] + k * sp.interval, i, k) for k in range(sp.edits[p]))
    plan.sort()
    lags = Histogram()
    cpu_lo: float | None = None
    await asyncio.sleep(max(0.0, t_go - time.monotonic()))
    i, last_report = 0, 0.0
    while i < len(plan):
        now = time.monotonic()
        if cpu_lo is None and now >= stats.window[0]:
            cpu_lo = _cpu_seconds()
        if plan[i][0] > now:
            await asyncio.sleep(min(plan[i][0] - now, 0.05))
            continue
        lags.add(now - plan[i][0])
        while i < len(plan) and plan[i][0] <= now:
            _, d, k = plan[i]
            device = devices[d]
            if not device.lost:
                device.edit(k)
                wlo, whi = device.space.window[device.pos]
                if wlo <= k < whi:
                    device.space.sent_in_window[device.pos] += 1
            i += 1
        if now - last_report >= 1.0:
            last_report = now
            channel.progress(20 + int(70 * min(1.0, (now - t_go) / load.end)))
    await asyncio.sleep(max(0.0, stats.window[1] - time.monotonic()))
    cpu_window = _cpu_seconds() - (cpu_lo if cpu_lo is not None else _cpu_seconds())

    # expected deliveries: each edit of the window to every other connected member
    expected = {"typing": 0, "team": 0}
    offered = 0
    for sp in spaces:
        receivers = sum(sp.connected)
        for p in range(len(sp.members)):
            if sp.connected[p]:
                expected[sp.kind] += sp.sent_in_window[p] * (receivers - 1)
                offered += sp.window[p][1] - sp.window[p][0]
    sent = sum(sum(sp.sent_in_window) for sp in spaces)

    # drain: wait for stragglers, or until everything arrived
    deadline = time.monotonic() + load.drain
    while time.monotonic() < deadline:
        if (sum(stats.delivered_window_edits.values()) >= sum(expected.values())
                and stats.accepted_window_edits >= sent):
            break
        await asyncio.sleep(0.05)
    t_end = time.monotonic()
    channel.progress(95)
    for device in devices:
        if device.conn is not None:
            device.conn.close()
    await asyncio.sleep(0.5)
    return {
        "index": index, "devices": len(devices), "established": established, "prepare_s": prepare_s,
        "connect_s": connect_s, "t_connect": t_connect, "t_go": t_go, "window": list(stats.window),
        "t_end": t_end, "offered": offered, "sent": sent, "expected": expected,
        "delivered_window_edits": stats.delivered_window_edits,
        "delivered_in_window": stats.delivered_in_window, "accepted_in_window": stats.accepted_in_window,
        "accepted_window_edits": stats.accepted_window_edits, "duplicates": stats.duplicates,
        "latency": {k: h.as_json() for k, h in stats.latency.items()}, "ack": stats.ack.as_json(),
        "ticker_lag": lags.as_json(), "cpu_window_s": cpu_window, "errors": dict(stats.errors),
        "error_examples": stats.examples,
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> int:
    load = Load(**json.loads(args.load))
    channel = ChildChannel()
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))
    result = asyncio.run(generate(load, args.child, args.port, args.index, args.generators,
                                  Path(args.barrier), channel))
    channel.result(result)
    return 0
