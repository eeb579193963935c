"""Raw WebSocket throughput, the LAN benchmark's yardstick (run by ``benchmarks.lan_netns``).

``serve ADDR PORT BYTES``: accept one WebSocket on /raw and send BYTES in 64 KiB binary
messages, then close. ``fetch URL``: receive them; print ``{"bytes": n, "seconds": s}``, from
the first message to the last.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

CHUNK = 64 * 1024


async def serve(address: str, port: int, total: int) -> None:
    from aiohttp import web

    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=2 * CHUNK)
        await ws.prepare(request)
        chunk = b"\x5a" * CHUNK
        sent = 0
        while sent < total:
            n = min(CHUNK, total - sent)
            await ws.send_bytes(chunk[:n])
            sent += n
        await ws.close()
        done.set()
        return ws
    app = web.Application()
    app.router.add_get("/raw", handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    print(json.dumps({"listening": port}), flush=True)
    async with asyncio.timeout(600):
        await done.wait()
    await runner.cleanup()


async def fetch(url: str) -> None:
    import aiohttp

    received, first, last = 0, 0.0, 0.0
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=2 * CHUNK) as ws:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            last = time.perf_counter()
            first = first or last
            received += len(msg.data)
    print(json.dumps({"bytes": received, "seconds": last - first}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(fetch(sys.argv[2]))
