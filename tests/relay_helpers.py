"""Helpers shared by the relay tests: relays in-process and as ``crdt-sync relay`` subprocesses,
/metrics scraping, raw WebSocket peers that speak frames by hand, and bounded waits.

Everything runs real parts on 127.0.0.1: aiohttp servers on ephemeral ports, SQLite data
directories, real subprocesses. Waits are on events, process output, or a condition polled
under a deadline; nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from crdt_sync import Change, Replica
from crdt_sync.protocol import Session, SessionConfig, SpaceSynced
from crdt_sync.protocol.link import SEALED_HEAD
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    Envelopes,
    Error,
    Have,
    Message,
    WireEnvelope,
    decode,
    encode,
)
from crdt_sync.relay.config import RelayConfig
from crdt_sync.relay.server import RelayServer
from crdt_sync.transports.driver import SessionOutcome
from crdt_sync.transports.relay import sync_session
from crdt_sync.transports.websocket import SYNC_PATH, WS_MAX_MESSAGE
from tests.sync_helpers import WAIT

if TYPE_CHECKING:
    from tests.relay_envelopes import EnvelopeHost

#: The ``crdt-sync`` entry point of the virtualenv running the tests.
CLI = str(Path(sys.executable).with_name("crdt-sync"))
#: Timers short enough that a lost frame costs milliseconds, not seconds.
FAST = SessionConfig(handshake_timeout=5.0, resend_interval=0.2, ack_timeout=1.0,
                     ping_interval=1.0, dead_after=10.0)
#: Upper bound for a subprocess to start, answer or exit.
PROC_WAIT = 30.0


# -- waiting ---------------------------------------------------------------------------------
async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT,
                     interval: float = 0.02) -> None:
    """Poll ``check`` until it holds; fail after ``timeout``. For state only visible by asking
    (another process's /metrics): the deadline bounds it, the condition ends it."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


def arrival(replica: Replica, entity: str, space: str) -> asyncio.Event:
    """Set when an edit of ``entity`` merged from another device reaches ``replica``."""
    event = asyncio.Event()

    def seen(changes: list[Change]) -> None:
        if any(c.id == entity and c.origin == "remote" for c in changes):
            event.set()

    replica.observe(seen, space)
    return event


def synced_flag(space: str) -> tuple[asyncio.Event, Callable[[Any], None]]:
    """An event set on the first SpaceSynced of ``space``, and the on_event that sets it."""
    flag = asyncio.Event()

    def on_event(event: Any) -> None:
        if isinstance(event, SpaceSynced) and event.space == space:
            flag.set()

    return flag, on_event


# -- relays ----------------------------------------------------------------------------------
@asynccontextmanager
async def running_relay(data: Path, session_config: SessionConfig | None = None,
                        **settings: Any) -> AsyncIterator[RelayServer]:
    """A started in-process relay on an ephemeral loopback port; stopped on exit."""
    server = RelayServer(RelayConfig(data=data, host="127.0.0.1", port=0, **settings), session_config)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=WAIT)


def http_url(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://", 1).rstrip("/")


async def http_get(ws_url: str, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, asyncio.timeout(WAIT), \
            http.get(http_url(ws_url) + path) as response:
        return response.status, await response.text()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(ws_url: str) -> Samples:
    """Every sample of the relay's /metrics, by (name, sorted labels)."""
    status, text = await http_get(ws_url, "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def rejections(ws_url: str, reason: str) -> float:
    return sample(await scrape(ws_url), "crdt_relay_rejections_total", reason=reason)


# -- syncing through a relay ---------------------------------------------------------------------
async def sync_once(replica: Replica, url: str, **kwargs: Any) -> SessionOutcome:
    """One one-shot session with the relay, under a deadline."""
    kwargs.setdefault("config", FAST)
    async with asyncio.timeout(2 * WAIT):
        return await sync_session(replica, url, timeout=WAIT, **kwargs)


async def sync_until_converged(replicas: list[Replica], url: str, space: str, max_rounds: int = 4) -> int:
    """Each replica syncs once per round, in turn, until every version vector is equal.
    Returns the number of rounds (bounded by ``max_rounds``)."""
    for rounds in range(1, max_rounds + 1):
        for replica in replicas:
            outcome = await sync_once(replica, url)
            assert outcome.synced and outcome.ok, outcome.closed
        vvs = [r.version_vector(space) for r in replicas]
        if all(vv == vvs[0] for vv in vvs):
            return rounds
    raise AssertionError(f"not converged after {max_rounds} rounds: {vvs}")


# -- subprocesses ------------------------------------------------------------------------------------
class Spawned:
    """A ``crdt-sync`` subprocess whose stderr lines are collected as they come and can be
    awaited (its logs and event lines say what it is doing)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._logged = asyncio.Condition()
        self._reader = asyncio.ensure_future(self._read_stderr())

    @staticmethod
    async def exec(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            CLI, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._logged:
                self.lines.append(line.decode(errors="replace").rstrip("\n"))
                self._logged.notify_all()
        async with self._logged:  # the process is gone: wake waiters so they fail now
            self._logged.notify_all()

    async def wait_line(self, match: Callable[[str], bool], what: str, count: int = 1,
                        timeout: float = WAIT) -> str:
        """The ``count``-th stderr line that ``match`` accepts (waits for it)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._logged:
                await self._logged.wait_for(
                    lambda: sum(map(match, self.lines)) >= count or self._reader.done())
        found = [line for line in self.lines if match(line)]
        assert len(found) >= count, f"no {what} (x{count}) on stderr: {self.lines[-20:]}"
        return found[count - 1]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, timeout: float = PROC_WAIT) -> int:
        async with asyncio.timeout(timeout):
            code = await self.proc.wait()
            await self._reader  # stderr is complete once the process is gone
        return code

    async def stdout(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(PROC_WAIT):
            return (await self.proc.stdout.read()).decode()

    async def close(self) -> None:
        """Kill it if it still runs (idempotent)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            self._reader.cancel()
            await self._reader


@asynccontextmanager
async def spawned(*args: str, env: dict[str, str] | None = None) -> AsyncIterator[Spawned]:
    """``crdt-sync ARGS`` running in the background; killed on exit if still running."""
    process = Spawned(await Spawned.exec(*args, env=env))
    try:
        yield process
    finally:
        await process.close()


class RelayProcess(Spawned):
    """A ``crdt-sync relay`` subprocess with JSON logs; its log events can be awaited."""

    def __init__(self, proc: asyncio.subprocess.Process, device_id: str, url: str) -> None:
        super().__init__(proc)
        self.device_id = device_id
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    @classmethod
    async def start(cls, data: Path, *args: str, env: dict[str, str] | None = None,
                    port: int = 0) -> RelayProcess:
        """Start it and read the ``listening on`` line it prints once it serves."""
        proc = await Spawned.exec("relay", "--data", str(data), "--host", "127.0.0.1", "--port", str(port),
                                  "--log-format", "json", *args, env=env)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            async with asyncio.timeout(PROC_WAIT):
                line = (await proc.stdout.readline()).decode()
        except TimeoutError:
            line = ""
        words = line.split()
        if words[:2] != ["crdt-sync", "relay"] or "listening" not in words:
            if proc.returncode is None:
                proc.kill()
            err = await proc.stderr.read()
            await proc.wait()
            raise AssertionError(f"the relay did not start ({line!r}): {err.decode()[-2000:]}")
        return cls(proc, words[2], words[-1])

    async def wait_log(self, event: str, count: int = 1, timeout: float = WAIT) -> dict[str, Any]:
        """The ``count``-th log line of ``event`` (waits for it)."""

        def match(line: str) -> bool:
            return f'"event": "{event}"' in line

        line = await self.wait_line(match, f"{event!r} log line", count, timeout)
        return dict(json.loads(line))

    def rss(self) -> int:
        return int(psutil.Process(self.proc.pid).memory_info().rss)


@asynccontextmanager
async def relay_process(data: Path, *args: str, env: dict[str, str] | None = None,
                        port: int = 0) -> AsyncIterator[RelayProcess]:
    relay = await RelayProcess.start(data, *args, env=env, port=port)
    try:
        yield relay
    finally:
        await relay.close()


async def run_cli(*args: str, timeout: float = PROC_WAIT) -> tuple[int, str, str]:
    """Run one ``crdt-sync`` command to its end: (exit code, stdout, stderr)."""
    proc = await Spawned.exec(*args)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- bystanders -----------------------------------------------------------------------------------
Check = Callable[[str], Awaitable[None]]


@asynccontextmanager
async def bystanders(url: str) -> AsyncIterator[Check]:
    """Two members of a space live on the relay for the whole test. Yields ``check(tag)``: an
    envelope one pushes reaches the other through the relay. On exit, each must still be on
    its first session (it ends when the test stops it)."""
    from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity

    admin, member = identity(), identity()
    sp = SpaceMaker(admin)
    x = EnvelopeHost(admin, sp.open(), sp.grant(member.public_key))
    y = EnvelopeHost(member, spaces=[sp.space])
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        sessions = [tg.create_task(exchange(h, url, live_until=stop)) for h in (x, y)]
        try:
            await y.until(lambda: len(y.got(sp.space)) == 2, "a bystander to catch up")

            async def check(tag: str) -> None:
                env = sp.data(admin, tag.encode())
                x.push(env)
                await y.until(lambda: any(e.hash == env.hash for e in y.got(sp.space)),
                              f"a bystander's envelope ({tag}) to cross the relay")

            yield check
        finally:
            stop.set()
    for task in sessions:
        closed = task.result().closed
        assert closed is not None and not closed.by_peer and closed.code == E_GOING_AWAY, \
            f"a bystander's session was disturbed: {closed}"


async def still_serves(url: str, name: str) -> None:
    """The relay is healthy and a device that never synced before syncs fully (a new space
    of its own, pushed and read back by a member)."""
    from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity

    status, body = await http_get(url, "/healthz")
    assert status == 200 and json.loads(body)["ok"] is True
    creator, member = identity(), identity()
    sp = SpaceMaker(creator)
    mine = [sp.open(), sp.grant(member.public_key),
            *(sp.data(creator, f"{name}-{i}".encode()) for i in range(3))]
    outcome = await exchange(EnvelopeHost(creator, *mine), url)
    assert outcome.synced and outcome.ok, outcome.closed
    reader = EnvelopeHost(member, spaces=[sp.space])
    outcome = await exchange(reader, url)
    assert outcome.synced and outcome.ok, outcome.closed
    assert [e.hash for e in reader.got(sp.space)] == [e.hash for e in mine]


# -- speaking frames by hand --------------------------------------------------------------------
class SwapEnvelopes:
    """A ``tamper`` for :meth:`RawPeer.converse`: the envelopes of each ENVELOPES frame the
    session sends are replaced by ``wire`` (only the first such frame with ``once``);
    ``batches`` lists the frames it replaced."""

    def __init__(self, wire: WireEnvelope, once: bool = False) -> None:
        self.wire, self.once = wire, once
        self.batches: list[int] = []

    def __call__(self, frame: bytes) -> bytes:
        msg = decode(frame)
        if not isinstance(msg, Envelopes) or (self.once and self.batches):
            return frame
        self.batches.append(msg.batch)
        return encode(Envelopes(msg.space, msg.batch, [self.wire]))


class RawPeer:
    """A raw aiohttp WebSocket to the relay's /v1/sync; frames are sent and read by hand.

    With a replica, a real :class:`Session` answers the relay, so the test can run a genuine
    handshake and then misbehave (tamper with frames, stop reading). The session hands out
    its frames in the clear (``defer_sealing``): ``tamper`` sees them so, and they are sealed
    after it, as the hostile peer this makes of the session would. Frames from the relay are
    read through the session's link (:meth:`message`).
    """

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                 replica: Replica | EnvelopeHost | None, spaces: list[str] | None,
                 config: SessionConfig) -> None:
        self.http, self.ws = http, ws
        self.session = Session(replica.sync_host, 0.0, config, spaces=spaces) if replica is not None else None
        self.received: list[Message] = []
        self.vanished = False

    async def vanish(self) -> None:
        """Drop the TCP connection without a WebSocket close (a client that went away)."""
        self.vanished = True
        await self.http.close()

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, replica: Replica | EnvelopeHost | None = None,
                   spaces: list[str] | None = None,
                   read_buffer: int | None = None, config: SessionConfig = FAST) -> AsyncIterator[RawPeer]:
        def small_buffer(addr_info: Any) -> socket.socket:
            family, kind, proto, _, _ = addr_info
            sock = socket.socket(family, kind, proto)
            if read_buffer is not None:  # before connecting, so the TCP window stays small too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, read_buffer)
            return sock

        connector = aiohttp.TCPConnector(force_close=True, socket_factory=small_buffer)
        async with aiohttp.ClientSession(connector=connector) as http:
            async with asyncio.timeout(WAIT):
                ws = await http.ws_connect(url.rstrip("/") + SYNC_PATH, max_msg_size=WS_MAX_MESSAGE,
                                           autoping=True, autoclose=True)
            peer = cls(http, ws, replica, spaces, config)
            try:
                yield peer
            finally:
                if not peer.vanished:
                    with contextlib.suppress(Exception):  # the relay may have gone already
                        await asyncio.wait_for(ws.close(), WAIT)

    async def send(self, frame: bytes) -> None:
        await self.ws.send_bytes(frame)

    async def recv(self) -> bytes | None:
        """The next frame, or None once the relay closed the connection."""
        async with asyncio.timeout(WAIT):
            msg = await self.ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                            aiohttp.WSMsgType.CLOSED), msg
        return None

    async def error_then_close(self) -> Error:
        """Read until the relay's ERROR, then check that the relay closed the connection."""
        error: Error | None = None
        for _ in range(10_000):  # bounded: frames the relay sent before its ERROR come first
            frame = await self.recv()
            if frame is None:
                break
            msg = self.message(frame)
            if error is not None:
                raise AssertionError(f"{msg} after the relay's ERROR")
            if isinstance(msg, Error):
                error = msg
        assert error is not None, "the relay closed without an ERROR"
        assert self.ws.closed or await self.recv() is None
        return error

    def message(self, frame: bytes) -> Message:
        """A frame from the relay, decoded (a SEALED one opened with the session's link,
        without touching its replay window)."""
        link = self.session.link if self.session is not None else None
        if link is not None and frame[:2] == SEALED_HEAD:
            return decode(link.inspect(frame))
        return decode(frame)

    async def handshake(self, tamper: Callable[[bytes], bytes] | None = None) -> None:
        """Run the session until the relay's first HAVE (it verified our AUTH and SPACES)."""
        await self.converse(lambda msg: isinstance(msg, Have), tamper)

    async def converse(self, until: Callable[[Message], bool],
                       tamper: Callable[[bytes], bytes] | None = None, max_frames: int = 10_000) -> Message:
        """Answer the relay with the session (frames passed through ``tamper``) until a frame
        from the relay satisfies ``until``; that frame is answered too, then returned."""
        assert self.session is not None
        session = self.session

        async def send_all(frames: list[bytes]) -> None:
            for frame in frames:
                await self.send(session.seal(tamper(frame) if tamper else frame))

        if session.bytes_out == 0:
            session.defer_sealing()  # frames in the clear for ``tamper``, sealed in send_all
            await send_all(session.start())
        for _ in range(max_frames):
            frame = await self.recv()
            assert frame is not None, f"the relay closed the connection; it sent {self.received[-3:]}"
            msg = self.message(frame)
            self.received.append(msg)
            await send_all(session.receive(frame, 0.0))
            if until(msg):
                return msg
        raise AssertionError(f"no matching frame in {max_frames}")


def flip_signature(frame: bytes) -> bytes:
    """An ENVELOPES frame with one bit of its first envelope's signature flipped."""
    msg = decode(frame)
    if not isinstance(msg, Envelopes):
        return frame
    first = msg.envelopes[0]
    bad = bytes([first.signature[0] ^ 0x01]) + first.signature[1:]
    forged = [type(first)(first.author, first.seq, first.hlc, first.payload, bad), *msg.envelopes[1:]]
    return encode(Envelopes(msg.space, msg.batch, forged))


# -- logs of the in-process client ---------------------------------------------------------------
@contextlib.contextmanager
def log_events(logger: str) -> Iterator[list[logging.LogRecord]]:
    """Collect the records of ``logger`` (the relay client logs each reconnect attempt)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(logging.DEBUG)
    log = logging.getLogger(logger)
    old_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
