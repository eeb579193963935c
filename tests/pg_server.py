"""A real, throw-away Postgres server for the tests: Debian's ``postgresql`` binaries, a
cluster made by ``initdb`` in a temporary directory, ``postgres`` listening on a unix socket
in a temporary directory and on 127.0.0.1 at a free port (trust authentication: nothing
but this machine reaches either).

``initdb`` refuses to run as root, so as root the cluster belongs to a system user of its
own (:data:`PG_USER`, created if missing) and every server command runs under it with
``runuser``; as any other user it runs as that user. Readiness is polled with
``pg_isready``, bounded in attempts and in time.

:func:`start_server` gives a :class:`PgServer`; :meth:`PgServer.create_database` makes one
fresh database (a test's) and returns its URL; :meth:`PgServer.stop` shuts it down.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: The system user a root test run starts Postgres as.
PG_USER = "crdtpg"
#: How long the server may take to accept connections, and how many times it is asked.
READY_TIMEOUT = 60.0
READY_ATTEMPTS = 600
#: How long a fast shutdown may take before the server is killed.
STOP_TIMEOUT = 30.0


class PgUnavailable(RuntimeError):
    """No Postgres server binaries here, or the server would not start (the message says why)."""


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, pg_ctl and postgres."""
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        bin_dir = Path(path)
        if all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres", "pg_isready")):
            try:
                found.append((int(bin_dir.parent.name), bin_dir))
            except ValueError:
                found.append((0, bin_dir))
    return max(found)[1] if found else None


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the process that started it
    dies (a test run killed before its teardown leaves no server behind: runuser passes the
    signal on to postgres). Looked up before the fork: the child only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """One running cluster (see the module)."""

    bin_dir: Path
    root: Path  # the temporary directory holding data/, socket/ and the log
    port: int
    user: str  # the cluster's superuser (the OS user that runs it)
    as_user: list[str]  # the prefix that runs a command as that user ([] when it is us)
    process: subprocess.Popen[bytes] | None = None
    _databases: int = field(default=0)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        """A TCP URL (what a relay is given)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, str(self.bin_dir / tool), *args], check=check,
                              capture_output=True, text=True, timeout=READY_TIMEOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for _ in range(READY_ATTEMPTS):
            if self.process is not None and self.process.poll() is not None:
                raise PgUnavailable(f"postgres exited with {self.process.returncode}:\n{self.log()}")
            probe = self.run("pg_isready", "-q", "-h", str(self.socket_dir), "-p", str(self.port),
                             "-U", self.user, "-d", "postgres", "-t", "2", check=False)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                break
            # pg_isready's own -t bounds each attempt; a short pause between attempts
            # (this is the fixture's bounded poll, not a test's wait)
            time.sleep(0.1)
        raise PgUnavailable(f"postgres did not accept connections within {READY_TIMEOUT:g} s:\n{self.log()}")

    def sql(self, statement: str, database: str = "postgres") -> None:
        """One statement as the superuser (autocommit: CREATE DATABASE may not run in a transaction)."""
        import psycopg

        with psycopg.connect(self.socket_url(database), autocommit=True) as conn:
            conn.execute(statement.encode())

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its TCP URL."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def halt(self) -> None:
        """Stop the server and keep its data (``resume`` starts it again on the same port)."""
        if self.process is not None and self.process.poll() is None:
            self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                     "-t", str(int(STOP_TIMEOUT)), check=False)
            self.process.wait(timeout=STOP_TIMEOUT)

    def resume(self) -> None:
        """Start the halted server again on its data directory and port."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.as_user, str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
                 "-k", str(self.socket_dir), "-h", "127.0.0.1", "-p", str(self.port),
                 "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent())
        self.wait_ready()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                     "-t", str(int(STOP_TIMEOUT)), check=False)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PgServer:
    """initdb a cluster in a new temporary directory and start postgres on it (see the module).

    Raises:
        PgUnavailable: no server binaries (install Debian's ``postgresql``), or it did not start.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise PgUnavailable("no Postgres server under /usr/lib/postgresql/*/bin: "
                            "apt-get install postgresql (.ci/run does)")
    if os.geteuid() == 0:
        _ensure_user(PG_USER)
        user, as_user = PG_USER, ["runuser", "-u", PG_USER, "--"]
    else:
        user, as_user = pwd.getpwuid(os.geteuid()).pw_name, []
    # Not under pytest's tmp_path: its parents are private to the user running the tests.
    root = Path(tempfile.mkdtemp(prefix="crdt-pg-"))
    server = PgServer(bin_dir, root, _free_port(), user, as_user)
    try:
        server.socket_dir.mkdir()
        if as_user:
            info = pwd.getpwnam(user)
            for path in (root, server.socket_dir):
                os.chown(path, info.pw_uid, info.pw_gid)
        server.run("initdb", "-D", str(server.data_dir), "-U", user, "--auth=trust",
                   "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        server.resume()  # (starts it: the same command as after a halt)
    except subprocess.CalledProcessError as exc:
        server.stop()
        raise PgUnavailable(f"{' '.join(map(str, exc.cmd))} failed:\n{exc.stdout}{exc.stderr}") from None
    except BaseException:
        server.stop()
        raise
    return server


__all__ = ["PG_USER", "PgServer", "PgUnavailable", "find_bin_dir", "start_server"]
