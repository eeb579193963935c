"""The issue's proof for finding 4: a real relay with an allow-list, as its own process, under
200 unauthenticated fat-HELLO connections from 20 loopback addresses, keeps its memory
bounded and keeps serving a member.

Each stranger's HELLO is ~1 MB of empty CBOR maps (it decoded to ~69 MiB, kept for the
session: thirty such sockets took a relay to 2.1 GiB). Half of them send it whole; the other
half hold its last byte back, so the relay sits on the partial message until the handshake
deadline or until a newcomer evicts them (the worst case for memory: a message is buffered
by the WebSocket layer before anyone can tell it is too large for a stranger).

The bound, and why: at most ``max_unauthenticated`` (64) connections are unauthenticated at
once, however many addresses they come from (20 addresses x the per-address share of 8 =
160 would not stop them), and each holds at most one WebSocket message of at most ~1 MB
here, never a decoded one (frames over 4 KiB are refused on their length before AUTH). So
the relay's peak RSS may grow by about 64 x 1 MB plus per-connection overhead: the test
allows 160 MiB. The finding's behaviour, 200 x 69 MiB, would be 13 GiB.

``python -m pytest -s tests/test_relay_flood.py`` prints the measured RSS.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from crdt_sync.protocol.messages import E_TIMEOUT, E_TOO_LARGE
from tests.relay_envelopes import EnvelopeHost, exchange, identity, own_space
from tests.relay_helpers import RelayProcess, rejections, relay_process, sample, scrape
from tests.strangers import WAIT, Stranger, fat_hello

MiB = 1024 * 1024
CONNECTIONS = 200
ADDRESSES = [f"127.0.0.{n}" for n in range(2, 22)]  # 20 source addresses
HELLO_BYTES = 1_000_000
PEAK_GROWTH_BOUND = 160 * MiB


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


async def flood(relay: RelayProcess, count: int, addresses: list[str],
                during: asyncio.Event) -> list[Stranger]:
    """``count`` strangers, round robin over ``addresses``, each sending a fat HELLO (odd ones
    holding its last byte back) and reading until the relay closes. ``during`` is set once
    half of them have sent theirs."""
    hello = fat_hello(HELLO_BYTES)
    sent = 0

    async def one(i: int) -> Stranger:
        nonlocal sent
        stranger = await Stranger.connect(relay.port, addresses[i % len(addresses)])
        if stranger.open:
            await stranger.send(hello, hold_back=i % 2)
        sent += 1
        if sent >= count // 2:
            during.set()
        if stranger.open:
            await stranger.until_closed()
        else:
            await stranger.close()
        return stranger

    async with asyncio.timeout(4 * WAIT):
        return await asyncio.gather(*(one(i) for i in range(count)))


async def test_200_fat_hellos_from_20_addresses_keep_the_relay_bounded_and_a_member_syncs(
        tmp_path: Path) -> None:
    sp, envelopes = own_space(identity(), 3, "m")
    member = EnvelopeHost(sp.creator, *envelopes)
    allow = tmp_path / "allow.txt"
    allow.write_text(member.device_id + "\n")
    async with relay_process(tmp_path / "relay", "--allow-list", str(allow)) as relay:
        warm = await exchange(member, relay.url)  # code paths loaded, the store open
        assert warm.synced and warm.ok, warm.closed
        before = proc_status(relay.proc.pid)["VmRSS"]
        reset_peak(relay.proc.pid)

        during = asyncio.Event()
        flooding = asyncio.ensure_future(flood(relay, CONNECTIONS, ADDRESSES, during))
        async with asyncio.timeout(4 * WAIT):
            await during.wait()
        member.add(sp.data(sp.creator, b"during-flood"))
        outcome = await exchange(member, relay.url)  # from 127.0.0.1, in the middle of it
        assert outcome.synced and outcome.ok, outcome.closed
        assert not member.refused  # its envelope was taken
        opened = await flooding

        status = proc_status(relay.proc.pid)
        peak, after = status["VmHWM"], status["VmRSS"]
        print(f"\nrelay RSS before {before / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB "
              f"(+{(peak - before) / MiB:.1f}), after {after / MiB:.1f} MiB; "
              f"{CONNECTIONS} strangers from {len(ADDRESSES)} addresses, HELLO {HELLO_BYTES} bytes")
        assert peak - before < PEAK_GROWTH_BOUND, f"peak RSS grew by {(peak - before) / MiB:.0f} MiB"

        # Every stranger was turned away one way or another, none got further.
        refused = sum(s.status == 429 for s in opened)
        too_large = sum(any(e.code == E_TOO_LARGE for e in s.errors) for s in opened)
        timed_out = sum(any(e.code == E_TIMEOUT for e in s.errors) for s in opened)
        dropped = sum(s.dropped and not s.errors for s in opened)  # evicted for a newcomer
        print(f"strangers: {too_large} too-large, {timed_out} timed out, {dropped} evicted, "
              f"{refused} refused (HTTP 429)")
        assert too_large + timed_out + dropped + refused == CONNECTIONS
        assert too_large > 0  # (most were evicted by later strangers before they had sent it)
        samples = await scrape(relay.url)
        evicted = sample(samples, "crdt_relay_rejections_total", reason="handshake-evicted")
        assert evicted + refused > 0, "the unauthenticated budget never filled"
        assert await rejections(relay.url, "too-large") == too_large
        assert sample(samples, "crdt_relay_connections_unauthenticated") == 0
        again = await exchange(member, relay.url)
        assert again.synced and again.ok
