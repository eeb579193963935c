"""The servers under load: pycrdt-websocket's server process, starting and stopping each
server (the crdt-sync-baseline one from another checkout), sampling its RSS and CPU, py-spy.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._harness import MB, BenchmarkError
from ._load import LISTENING, MODULE, OURS


# -- pycrdt-websocket's server process -----------------------------------------------------------
async def serve_ypy(ystore: Path | None) -> None:
    import uvicorn
    from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom, exception_logger

    database = str(ystore / "ystore.db") if ystore is not None else ""

    class Server(WebsocketServer):  # type: ignore[misc]
        async def get_room(self, name: str) -> Any:
            if database and name not in self.rooms:
                from pycrdt.store import SQLiteYStore

                class Store(SQLiteYStore):  # type: ignore[misc]
                    db_path = database

                self.rooms[name] = YRoom(ready=self.rooms_ready, ystore=Store(path=name),
                                         exception_handler=self.exception_handler, log=self.log)
            return await super().get_room(name)

    websocket_server = Server(exception_handler=exception_logger)
    config = uvicorn.Config(ASGIServer(websocket_server), host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", backlog=4096)
    server = uvicorn.Server(config)
    async with websocket_server:
        task = asyncio.create_task(server.serve())
        for _ in range(2000):  # up to 20 s
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise SystemExit("uvicorn did not start")
        port = server.servers[0].sockets[0].getsockname()[1]
        print(f"pycrdt-websocket {LISTENING}{port}", flush=True)
        await task  # until SIGTERM (uvicorn handles it)


# -- the parent ------------------------------------------------------------------------------------
@dataclass
class Sample:
    t: float
    rss: int
    cpu: float  # the server's CPU seconds so far
    busy: float  # the whole machine's busy CPU seconds so far (every core)


@dataclass
class Sampler:
    """Samples a process's RSS and CPU time every ``interval`` seconds, in a thread."""

    pid: int
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        proc = psutil.Process(self.pid)
        while not self._stop.is_set():
            try:
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    rss = proc.memory_info().rss
            except psutil.Error:
                return
            self.samples.append(Sample(time.monotonic(), rss, cpu.user + cpu.system, _machine_busy()))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def cpu_percent(self, lo: float, hi: float) -> float:
        inside = [s for s in self.samples if lo <= s.t <= hi]
        if len(inside) < 2:
            return math.nan
        return 100 * (inside[-1].cpu - inside[0].cpu) / (inside[-1].t - inside[0].t)

    def machine_percent(self, lo: float, hi: float) -> float:
        """CPU use of the whole machine, in percent of one core (200 = both cores busy)."""
        inside = [s for s in self.samples if lo <= s.t <= hi]
        if len(inside) < 2:
            return math.nan
        return 100 * (inside[-1].busy - inside[0].busy) / (inside[-1].t - inside[0].t)

    def rss_mb(self, lo: float, hi: float, pick: Callable[[Sequence[int]], int] = max) -> float:
        inside = [s.rss for s in self.samples if lo <= s.t <= hi]
        return pick(inside) / MB if inside else math.nan


def _machine_busy() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                 + getattr(t, "steal", 0.0))


def wait_quiet(limit: float, threshold: float = 25.0) -> float:
    """Wait (up to ``limit`` s) until the machine is quiet: other work on it (other people's
    tests) skews every number here. Returns the CPU use seen last, in percent of one core."""
    deadline = time.monotonic() + limit
    while True:
        before, t0 = _machine_busy(), time.monotonic()
        time.sleep(2.0)
        used = 100 * (_machine_busy() - before) / (time.monotonic() - t0)
        if used < threshold or time.monotonic() >= deadline:
            return used


def hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def _raise_nofile() -> None:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit[1], limit[1]))


def start_server(server: str, work: Path, profile: str | None,
                  baseline: Path | None = None) -> tuple[subprocess.Popen[str], int, Path]:
    log = work / f"{server}.log"
    env = None
    if server == "crdt-sync-baseline":
        # the relay of another checkout (an earlier commit), run by this interpreter: its
        # crdt_sync package comes first on the path
        if baseline is None:
            raise BenchmarkError("the crdt-sync-baseline server needs --baseline DIR (a checkout)")
        # (and the plain load's setting: a relay that does not enforce membership)
        env = {**os.environ, "PYTHONPATH": str(baseline.resolve()), "CRDT_SYNC_RELAY_MEMBERSHIP": "false"}
    elif server in ("crdt-sync", "crdt-sync-sealed", "crdt-sync-members"):  # the relay setting
        # on by default; the plain load (plaintext in named spaces) and the sealed one measure
        # a relay that does not enforce, the members load one that does
        on = "true" if server == "crdt-sync-members" else "false"
        env = {**os.environ, "CRDT_SYNC_RELAY_MEMBERSHIP": on}
    if server in OURS:
        (work / "relay").mkdir()
        cmd = [sys.executable, "-m", "crdt_sync.cli", "relay", "--data", str(work / "relay"), "--port", "0"]
        if profile == "cprofile":
            cmd[1:3] = ["-m", "cProfile", "-o", str(work / "relay.prof"), "-m", "crdt_sync.cli"]
    else:
        cmd = [sys.executable, "-m", MODULE, "--serve-ypy"]
        if server == "pycrdt-websocket-ystore":
            (work / "ystore").mkdir()
            cmd += ["--ystore", str(work / "ystore")]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                preexec_fn=_raise_nofile, start_new_session=True)
    assert proc.stdout is not None
    port: list[int] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if LISTENING in line:
                port.append(int(line.rsplit(":", 1)[1]))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)
    if not port:
        stop_server(proc)
        raise BenchmarkError(f"{server} did not start:\n{log.read_text()[-3000:]}")
    return proc, port[0], log


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _py_spy_path() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # pip installs it next to the interpreter
    return str(beside) if beside.exists() else (shutil.which("py-spy") or "py-spy")


def py_spy(pid: int, start: float, seconds: float, out: Path) -> threading.Thread:
    def run() -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        subprocess.run([_py_spy_path(), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                        "--rate", "200", "--format", "raw", "--threads", "--nonblocking",
                        "--output", str(out)],
                       capture_output=True, timeout=seconds + 60, check=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
