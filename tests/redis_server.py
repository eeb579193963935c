"""A real, throw-away Redis server for the tests: Debian's ``redis-server`` listening on
127.0.0.1 at a free port, its working directory a temporary one, no persistence (no RDB
snapshots, no AOF) unless asked.

Readiness is polled with a ``PING`` over a plain socket, bounded in attempts and in time.
The server is started with ``PR_SET_PDEATHSIG`` (as :mod:`tests.pg_server` does), so a test
run killed before its teardown leaves no server behind.

:func:`start_redis` gives a :class:`RedisServer`; :meth:`RedisServer.kill` and
:meth:`RedisServer.restart` let a test take it away and bring it back on the same port;
:meth:`RedisServer.stop` shuts it down and removes its directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pg_server import _die_with_parent, _free_port

#: How long the server may take to answer PING, and how many times it is asked.
READY_TIMEOUT = 30.0
READY_ATTEMPTS = 300
STOP_TIMEOUT = 10.0


class RedisUnavailable(RuntimeError):
    """No redis-server binary here, or it would not start (the message says why)."""


def find_redis() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.isfile(p)), None)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One running redis-server (see the module)."""

    binary: str
    root: Path
    port: int
    persist: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.root / "redis.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--daemonize", "no", "--protected-mode", "yes", "--logfile", str(self.log_path)]
        if not self.persist:
            args += ["--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=_die_with_parent())
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(READY_ATTEMPTS):
            if self.process is not None and self.process.poll() is not None:
                raise RedisUnavailable(f"redis-server exited with {self.process.returncode}:\n{self.log()}")
            if _ping(self.port):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the fixture's bounded poll between attempts, not a test's wait
        raise RedisUnavailable(f"redis-server did not answer PING within {READY_TIMEOUT:g} s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL it (what it held in memory is gone)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        """Start it again on the same port (after :meth:`kill`)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def start_redis(persist: bool = False) -> RedisServer:
    """Start redis-server on a free loopback port in a new temporary directory.

    Raises:
        RedisUnavailable: no binary (install Debian's ``redis-server``), or it did not start.
    """
    binary = find_redis()
    if binary is None:
        raise RedisUnavailable("no redis-server binary: apt-get install redis-server (.ci/run does)")
    server = RedisServer(binary, Path(tempfile.mkdtemp(prefix="crdt-redis-")), _free_port(), persist)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


__all__ = ["RedisServer", "RedisUnavailable", "find_redis", "start_redis"]
