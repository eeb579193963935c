"""Hostile and misbehaving clients against a real relay, over raw WebSockets.

Each kind of bad input is refused with a protocol ERROR carrying its code and a reason, and
counted in /metrics; afterwards the relay still serves a new device, and two live devices
that were connected the whole time (bystanders) are unaffected: still on their first session,
still exchanging edits. A client that stops reading is dropped without the relay's memory
growing with the space it asked for (RSS of a relay process, measured with psutil).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from crdt_sync.identity import Identity
from crdt_sync.membership import Rights
from crdt_sync.protocol.messages import (
    E_GOING_AWAY,
    E_LIMIT,
    E_MALFORMED,
    E_REJECTED,
    E_TOO_LARGE,
    E_UNSUPPORTED_VERSION,
    MAX_FRAME,
    MAX_VERSION,
    MIN_VERSION,
    Envelopes,
    Error,
    Hello,
    decode,
    encode,
)
from crdt_sync.relay.server import RelayServer
from crdt_sync.relay.storage import RelayStore
from tests.conftest import ReplicaFactory
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity
from tests.relay_helpers import (
    FAST,
    RawPeer,
    bystanders,
    flip_signature,
    rejections,
    relay_process,
    running_relay,
    sample,
    scrape,
    still_serves,
    wait_until,
)
from tests.sync_helpers import WAIT, expected_code, fill

MiB = 1024 * 1024


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayServer]:
    async with running_relay(tmp_path / "relay") as server:
        yield server


# -- frames that are not the protocol -------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    pytest.param(random.Random(11).randbytes(300), id="random-bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(bytes.fromhex("8600010158208a88e3dd7409f195"), id="truncated-hello"),
    pytest.param("HELLO relay", id="text-message"),
])
async def test_malformed_frame_gets_error_1_then_close(relay: RelayServer, open_replica: ReplicaFactory,
                                                       frame: bytes | str) -> None:
    if isinstance(frame, bytes):
        assert expected_code(frame) == E_MALFORMED
    async with bystanders(relay.url) as check:
        async with RawPeer.open(relay.url) as raw:
            if isinstance(frame, str):
                await raw.ws.send_str(frame)
            else:
                await raw.send(frame)
            error = await raw.error_then_close()
        assert error.code == E_MALFORMED and error.message
        assert await rejections(relay.url, "malformed") == 1
        await check("after-malformed")
        await still_serves(relay.url, "probe")


async def test_malformed_frame_after_the_handshake(relay: RelayServer, open_replica: ReplicaFactory) -> None:
    device = open_replica("device")
    fill(device, "d", 2)
    async with bystanders(relay.url) as check:
        async with RawPeer.open(relay.url, device) as raw:
            await raw.handshake()
            await raw.send(b"\xff\x00garbage")
            error = await raw.error_then_close()
        assert error.code == E_MALFORMED
        await check("after-malformed")
        await still_serves(relay.url, "probe")


async def test_oversized_frames(relay: RelayServer, open_replica: ReplicaFactory) -> None:
    async with bystanders(relay.url) as check:
        # Above the protocol's 1 MiB: the session refuses it with ERROR 4.
        frame = b"\x5a" + (MAX_FRAME + MiB // 2).to_bytes(4, "big") + os.urandom(MAX_FRAME + MiB // 2)
        assert MAX_FRAME < len(frame) < 2 * MiB
        async with RawPeer.open(relay.url) as raw:
            await raw.send(frame)
            error = await raw.error_then_close()
        assert error.code == E_TOO_LARGE and str(MAX_FRAME) in error.message
        assert await rejections(relay.url, "too-large") == 1

        # Above what the WebSocket layer takes at all: closed with 1009, never buffered whole.
        async with RawPeer.open(relay.url) as raw:
            await raw.send(bytes(3 * MiB))
            for _ in range(10):  # the relay's HELLO may come before the close
                if await raw.recv() is None:
                    break
            assert raw.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await check("after-oversized")
        await still_serves(relay.url, "probe")


async def test_wrong_protocol_version_gets_error_2(relay: RelayServer, open_replica: ReplicaFactory) -> None:
    key = Identity.generate().public_key
    async with bystanders(relay.url) as check:
        # (1, 1): before QUARANTINED; (2, 2): before encrypted links (a downgrade, refused)
        for low, high in ((MAX_VERSION + 1, MAX_VERSION + 8), (0, 0), (1, 1), (2, 2)):
            async with RawPeer.open(relay.url) as raw:
                await raw.send(encode(Hello(low, high, key, os.urandom(32), {})))
                error = await raw.error_then_close()
            assert error.code == E_UNSUPPORTED_VERSION
            assert f"{low}..{high}" in error.message  # says what each side speaks
            if high < MIN_VERSION:
                assert error.message.endswith("upgrade crdt-sync on the peer"), error.message
        assert await rejections(relay.url, "unsupported-version") == 4
        await check("after-version")
        await still_serves(relay.url, "probe")


# -- forged envelopes ---------------------------------------------------------------------------------
async def test_forged_envelope_gets_error_5_and_nothing_of_its_frame_is_stored(
        relay: RelayServer, open_replica: ReplicaFactory) -> None:
    forger = identity()
    sp = SpaceMaker(forger)
    device = EnvelopeHost(forger, sp.open(), *(sp.data(forger, b"f-%d" % i) for i in range(39)))
    config = dataclasses.replace(FAST, batch_count=8)

    def forge_batch_3(frame: bytes) -> bytes:
        msg = decode(frame)
        return flip_signature(frame) if isinstance(msg, Envelopes) and msg.batch == 3 else frame

    async with bystanders(relay.url) as check:
        async with RawPeer.open(relay.url, device, config=config) as raw:
            error = await raw.converse(lambda m: isinstance(m, Error), tamper=forge_batch_3)
            assert isinstance(error, Error)
            assert error.code == E_REJECTED and "bad-signature" in error.message
            assert await raw.recv() is None  # and the relay closed the connection
        # Batches 1 and 2 were valid and are kept; nothing of batch 3 (or after) is.
        assert relay.store.version_vector(sp.space) == {device.device_id: 16}
        recorded = relay.store.store.rejections()
        assert len(recorded) == 1 and recorded[0][2] == "bad-signature"
        assert device.device_id in recorded[0][1]  # which peer sent it
        assert await rejections(relay.url, "rejected-envelope") == 1
        await check("after-forgery")

        # The genuine envelopes are accepted afterwards: the chain was not corrupted.
        honest = await exchange(device, relay.url)
        assert honest.synced and relay.store.version_vector(sp.space)[device.device_id] == 40
        await still_serves(relay.url, "probe")


# -- limits -------------------------------------------------------------------------------------------
async def test_connection_limit_gets_error_10(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay", max_connections=1) as relay:
        admin, member = identity(), identity()
        sp = SpaceMaker(admin)
        first = EnvelopeHost(admin, sp.open(), sp.grant(member.public_key))
        second = EnvelopeHost(member, spaces=[sp.space])
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            live = tg.create_task(exchange(first, relay.url, live_until=stop))
            try:
                async def held() -> bool:
                    return relay.store.version_vector(sp.space) == {admin.id: 2}

                await wait_until(held, "the first device to hold the only connection")
                refused = await exchange(second, relay.url)
                assert refused.closed is not None and not refused.synced
                assert (refused.closed.code, refused.closed.by_peer) == (E_LIMIT, True)
                assert "too many connections" in refused.closed.reason
                assert await rejections(relay.url, "connection-limit") == 1

                still_live = sp.data(admin, b"still-live")
                first.push(still_live)

                async def stored() -> bool:
                    return relay.store.version_vector(sp.space) == {admin.id: 3}

                await wait_until(stored, "the connected device's envelope to reach the relay")
            finally:
                stop.set()
        closed = live.result().closed  # the refusal did not disturb the connected device
        assert closed is not None and not closed.by_peer and closed.code == E_GOING_AWAY

        async def slot_free() -> bool:
            return sample(await scrape(relay.url), "crdt_relay_connections_open") == 0

        await wait_until(slot_free, "the first device's connection to close")
        accepted = await exchange(second, relay.url)
        assert accepted.synced and still_live.hash in {e.hash for e in second.got(sp.space)}


# -- a client that stops reading ------------------------------------------------------------------
#: Four big spaces: the relay sends its window of each at once, so a client that stops
#: reading fills the socket buffers at the first window rather than after resends (each
#: window holds three big envelopes: the first batch is the space's membership envelopes).
BIG_SPACES = ["archive-0", "archive-1", "archive-2", "archive-3"]
ENVELOPES_PER_SPACE = 26
PAYLOAD = 400 * 1024  # each envelope close to the 512 KiB limit: ~40 MiB in all
SLOW_CONSUMERS = 4  # buffering the spaces for each would take ~160 MiB
RSS_BOUND = 100 * MiB


def seed_big_spaces(data: Path, readers: list[Identity]) -> tuple[list[str], int]:
    """Store big spaces at the relay through its own storage (verified, committed), each
    readable by ``readers``; their ids, and their size.

    The relay never opens payloads (they are end-to-end encrypted): random bodies (which do
    not compress) are the cheapest way to make ~40 MiB of envelopes.
    """
    author = Identity.generate()
    store = RelayStore(data)
    total = 0
    spaces = []
    for _ in BIG_SPACES:
        sp = SpaceMaker(author)
        envs = [sp.open(), *(sp.grant(r.public_key, Rights.READ) for r in readers)]
        envs += [sp.data(author, os.urandom(PAYLOAD)) for _ in range(ENVELOPES_PER_SPACE)]
        for env in envs:
            applied, _, _ = store.receive([env.wire], sp.space, tolerate_gaps=False)
            assert applied == 1
            total += len(env.wire)
        spaces.append(sp.space)
    store.close()
    return spaces, total


async def test_client_that_stops_reading_is_dropped_and_memory_stays_bounded(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    data = tmp_path / "relay"
    keys = [identity() for _ in range(SLOW_CONSUMERS)]
    spaces, size = seed_big_spaces(data, keys)
    assert SLOW_CONSUMERS * size > 1.5 * RSS_BOUND  # buffering per reader would break the bound
    env = {"CRDT_SYNC_RELAY_SEND_TIMEOUT": "0.5"}  # the setting under test, from the environment
    async with relay_process(data, env=env) as relay, bystanders(relay.url) as check:
        await check("warm-up")
        before = relay.rss()
        readers = [EnvelopeHost(key, spaces=spaces) for key in keys]
        async with AsyncExitStack() as stack:
            stalled = []
            for reader in readers:
                raw = await stack.enter_async_context(
                    RawPeer.open(relay.url, reader, spaces=spaces, read_buffer=4096))
                await raw.handshake()  # its HAVEs say it lacks everything; then it never reads
                stalled.append(raw)

            async def all_dropped() -> bool:
                return await rejections(relay.url, "slow-consumer") >= SLOW_CONSUMERS

            await wait_until(all_dropped, "the relay to drop the clients that stopped reading",
                             timeout=3 * WAIT)
            grown = relay.rss() - before
            assert grown < RSS_BOUND, f"relay RSS grew by {grown / MiB:.0f} MiB for {size / MiB:.0f} MiB"

            async def slots_released() -> bool:  # dropped means gone, not a stuck connection
                return sample(await scrape(relay.url), "crdt_relay_connections_open") == 2

            await wait_until(slots_released, "the dropped connections to close", timeout=3 * WAIT)
            # Each drop ended its session in order: logged with what it sent, no stray error.
            for n in range(1, SLOW_CONSUMERS + 1):
                closed = await relay.wait_log("session.closed", count=n)
                assert closed["peer"] in {r.device_id for r in readers} and closed["envelopes_in"] == 0
            for raw in stalled:
                await raw.vanish()
        await check("after-slow-consumers")
        await still_serves(relay.url, "probe")
        assert relay.rss() - before < RSS_BOUND
        assert await rejections(relay.url, "slow-consumer") == SLOW_CONSUMERS
