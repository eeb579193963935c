"""transports._aiohttp_compat: the fast path through aiohttp's private writer, and the
fallback to the public API when the version, the attribute or the signature is not the one
that was checked. Frames really cross a loopback aiohttp WebSocket both ways."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp._websocket.writer import WebSocketWriter

from crdt_sync.transports import _aiohttp_compat as compat
from crdt_sync.transports.websocket import SYNC_PATH, WebSocketLink, connect

WAIT = 10.0
ROOT = Path(__file__).resolve().parent.parent
FRAMES = [b"\x82\x06\x01", bytes(range(200)), b"x" * 5000]


@asynccontextmanager
async def loopback() -> AsyncIterator[tuple[WebSocketLink, WebSocketLink]]:
    """(server side, client side) of one WebSocket on 127.0.0.1."""
    accepted: asyncio.Queue[WebSocketLink] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await accepted.put(WebSocketLink(ws, "server side"))
        await done.wait()
        return ws

    app = web.Application()
    app.router.add_get(SYNC_PATH, handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = await connect(f"ws://127.0.0.1:{port}", timeout=WAIT)
    try:
        async with asyncio.timeout(WAIT):
            server = await accepted.get()
        yield server, client
    finally:
        done.set()
        await client.close()
        await runner.cleanup()


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the frames written through the private fast path."""
    calls: list[int] = []
    original = WebSocketWriter._write_websocket_frame

    def spy(self: WebSocketWriter, message: bytes, opcode: int, rsv: int) -> None:
        calls.append(len(message))
        original(self, message, opcode, rsv)

    monkeypatch.setattr(WebSocketWriter, "_write_websocket_frame", spy)
    return calls


async def _send_both_ways(server: WebSocketLink, client: WebSocketLink) -> list[bool]:
    """Send FRAMES each way (nowait first, else awaited); returns what send_nowait said."""
    said = []
    for sender, receiver in ((server, client), (client, server)):
        for frame in FRAMES:
            now = sender.send_nowait(frame)
            said.append(now)
            if not now:
                await sender.send(frame)
            async with asyncio.timeout(WAIT):
                assert await receiver.recv() == frame
    return said


def test_the_installed_aiohttp_has_the_fast_path() -> None:
    assert compat.REFUSAL is None, compat.REFUSAL
    assert compat.fast_path_enabled()
    assert compat.SUPPORTED[0] <= compat.parse_version(aiohttp.__version__) < compat.SUPPORTED[1]


async def test_small_frames_go_through_the_fast_path(fast_calls: list[int]) -> None:
    async with loopback() as (server, client):
        assert server.backlog == 0
        said = await _send_both_ways(server, client)
        written = list(fast_calls)  # (closing writes a CLOSE frame the same way)
    # Every frame here is below NOWAIT_FRAME (16 KiB): all go at once, from the server and
    # from the client (which masks them).
    assert said == [True] * len(said)
    assert written == [len(f) for f in FRAMES] * 2


async def test_a_frame_above_the_nowait_size_takes_the_public_api(monkeypatch: pytest.MonkeyPatch) -> None:
    big = b"y" * (64 * 1024)
    sent_bytes = _count_send_bytes(monkeypatch)
    async with loopback() as (server, client):
        assert not server.send_nowait(big)
        await server.send(big)
        async with asyncio.timeout(WAIT):
            assert await client.recv() == big
    assert sent_bytes == [len(big)]


@pytest.mark.parametrize("why", ["version", "attribute", "signature"])
async def test_the_fallback_sends_through_the_public_api(
        monkeypatch: pytest.MonkeyPatch, fast_calls: list[int], why: str) -> None:
    def narrow(self: object, message: bytes, opcode: int) -> None:
        raise AssertionError("never called")

    version, method = {
        "version": ("3.99.0", WebSocketWriter._write_websocket_frame),
        "attribute": (aiohttp.__version__, None),
        "signature": (aiohttp.__version__, narrow),
    }[why]
    refusal = compat.fast_path_refusal(version, method)
    assert refusal is not None
    monkeypatch.setattr(compat, "REFUSAL", refusal)
    sent_bytes = _count_send_bytes(monkeypatch)
    async with loopback() as (server, client):
        said = await _send_both_ways(server, client)
    assert said == [False] * len(said)
    assert len(sent_bytes) == 2 * len(FRAMES)  # every frame went through send_bytes
    assert not compat.fast_path_enabled()


async def test_a_type_error_at_the_call_turns_the_fast_path_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def changed(self: object, message: bytes, opcode: int, rsv: int, extra: int) -> None:
        calls.append(len(message))  # the signature check passed at import; aiohttp changed

    monkeypatch.setattr(WebSocketWriter, "_write_websocket_frame", changed)
    monkeypatch.setattr(compat, "REFUSAL", None)
    async with loopback() as (server, client):
        assert not server.send_nowait(FRAMES[0])  # TypeError: nothing written
        assert compat.REFUSAL is not None and "TypeError" in compat.REFUSAL
        monkeypatch.undo()  # aiohttp's own writer back, for send_bytes
        monkeypatch.setattr(compat, "REFUSAL", "off after a TypeError")
        await server.send(FRAMES[0])
        async with asyncio.timeout(WAIT):
            assert await client.recv() == FRAMES[0]
        assert not server.send_nowait(FRAMES[0])  # stays off
    assert calls == []


def test_the_signature_check() -> None:
    def fits(self: object, message: bytes, opcode: int, rsv: int) -> None: ...
    def renamed(self: object, data: bytes, opcode: int, rsv: int) -> None: ...
    def longer(self: object, message: bytes, opcode: int, rsv: int, more: int) -> None: ...
    def keywords(self: object, message: bytes, *, opcode: int, rsv: int) -> None: ...

    assert compat.signature_fits(fits)
    assert compat.signature_fits(WebSocketWriter._write_websocket_frame)
    for bad in (renamed, longer, keywords):
        assert not compat.signature_fits(bad)
    assert compat.parse_version("3.14.5") == (3, 14)
    assert compat.parse_version("4.0.0a1") == (4, 0)
    assert compat.parse_version("unknown") == (0, 0)


def _count_send_bytes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    for cls in (web.WebSocketResponse, aiohttp.ClientWebSocketResponse):
        original: Callable[..., Any] = cls.send_bytes

        async def counting(self: Any, data: bytes, *args: Any, _original: Callable[..., Any] = original,
                           **kwargs: Any) -> None:
            sizes.append(len(data))
            await _original(self, data, *args, **kwargs)

        monkeypatch.setattr(cls, "send_bytes", counting)
    return sizes


# -- nothing else touches aiohttp's private attributes ------------------------------------------

#: Private attributes of aiohttp objects that the compatibility module uses.
_AIOHTTP_PRIVATE = {"_writer", "_write_websocket_frame", "_closing", "_paused", "_drain_helper",
                    "_reader", "_payload_writer", "_protocol", "_transport"}


def test_no_module_but_the_compat_module_touches_aiohttp_privates() -> None:
    offenders = []
    for folder in ("transports", "relay", "crdt_sync", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name == "_aiohttp_compat.py" or not path.is_file():
                continue
            source = path.read_text()
            if "aiohttp" not in source and "WebSocketLink" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                name = None
                if isinstance(node, ast.Attribute) and not _is_self(node.value):
                    name = node.attr
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1
                      and isinstance(node.args[1], ast.Constant)):
                    name = node.args[1].value
                if name in _AIOHTTP_PRIVATE:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offenders == [], "aiohttp internals belong in transports/_aiohttp_compat.py"


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")
