"""The relay's budgets before authentication and its per-name state (issue 11, finding 4),
against an in-process relay over real loopback sockets from several source addresses.

- Unauthenticated connections have a budget of their own, apart from members': past
  ``max_unauthenticated_per_address`` from one address the upgrade is refused (HTTP 429);
  past ``max_unauthenticated`` the oldest of the address holding the most is dropped for
  the newcomer, so idle strangers cannot lock a member out.
- An unauthenticated connection has ``handshake_timeout`` to authenticate (ERROR 7).
- Nothing the relay keeps per space name, device or address outlives the sessions that
  named it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt_sync.membership import Rights
from crdt_sync.protocol.messages import E_TIMEOUT, E_TOO_LARGE
from crdt_sync.protocol.messages import PROTOCOL_VERSION as V
from crdt_sync.relay.admission import Admission
from crdt_sync.relay.config import ENV_PREFIX, ConfigError, load_config
from crdt_sync.relay.server import RelayServer
from crdt_sync.transports.websocket import ConnectFailed, connect
from tests.conftest import ReplicaFactory
from tests.link_helpers import HandPeer
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, exchange, identity
from tests.relay_helpers import rejections, running_relay, sync_once, wait_until
from tests.strangers import Stranger, fat_hello
from tests.sync_helpers import admit, fill

#: A well-formed HELLO of a fresh ephemeral key (each stranger its own: see ``strangers``).
SMALL_HELLO = b"small"


def small_hello() -> bytes:
    return SMALL_HELLO


@contextlib.asynccontextmanager
async def strangers(relay: RelayServer, sources: list[str],
                    hello: bytes | None = None) -> AsyncIterator[list[Stranger]]:
    """One connection from each source (in order), each having sent ``hello`` if given and
    then nothing: idle strangers. Closed on exit. With :func:`small_hello` each sends the
    HELLO of a :class:`HandPeer` of its own, and reads the relay's SEALED frames with it."""
    opened: list[Stranger] = []
    try:
        for source in sources:
            stranger = await Stranger.connect(relay.port, source)
            opened.append(stranger)
            if stranger.open and hello is SMALL_HELLO:
                stranger.peer = HandPeer(versions=(V, V))
                await stranger.send(stranger.peer.hello)
            elif stranger.open and hello is not None:
                await stranger.send(hello)
        yield opened
    finally:
        for stranger in opened:
            await stranger.close()


async def unauthenticated(relay: RelayServer, count: int) -> None:
    async def reached() -> bool:
        return relay.per_name_state()["unauthenticated"] == count

    await wait_until(reached, f"{count} unauthenticated connections at the relay")


async def test_past_its_share_an_address_is_refused_before_the_websocket_opens(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay", max_unauthenticated=2,
                             max_unauthenticated_per_address=2) as relay:
        async with strangers(relay, ["127.0.0.2"] * 3, small_hello()) as opened:
            assert [s.status for s in opened] == [101, 101, 429]
            assert await rejections(relay.url, "address-limit") == 1
            await unauthenticated(relay, 2)
            member = open_replica("member")  # from 127.0.0.1: within its share, it makes room
            fill(member, "m", 2)
            outcome = await sync_once(member, relay.url)
            assert outcome.synced and outcome.ok, outcome.closed
            assert await rejections(relay.url, "handshake-evicted") == 1
        await unauthenticated(relay, 0)


async def test_while_the_budget_has_room_an_address_is_not_limited(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay", max_unauthenticated=64,
                             max_unauthenticated_per_address=2) as relay:
        devices = [open_replica(f"device-{i}") for i in range(12)]  # one address, at once
        for device in devices:
            admit(device)
        outcomes = await asyncio.gather(*(sync_once(d, relay.url) for d in devices))
        assert all(o.synced and o.ok for o in outcomes), [o.closed for o in outcomes]
        assert await rejections(relay.url, "address-limit") == 0


async def test_a_device_over_its_address_share_is_told_the_relay_is_busy(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay", max_unauthenticated=1,
                             max_unauthenticated_per_address=1) as relay, \
            strangers(relay, ["127.0.0.1"], small_hello()):
        await unauthenticated(relay, 1)
        with pytest.raises(ConnectFailed, match=r"busy \(HTTP 429.*retry later"):
            await connect(relay.url)


async def test_idle_strangers_from_many_addresses_cannot_lock_out_a_member(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    sources = ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3", "127.0.0.4"]
    async with running_relay(tmp_path / "relay", max_unauthenticated=4,
                             max_unauthenticated_per_address=2) as relay:
        async with strangers(relay, sources, small_hello()) as opened:
            assert all(s.open for s in opened)
            await unauthenticated(relay, 4)  # the fifth made room: the oldest of 127.0.0.2 went
            assert await rejections(relay.url, "handshake-evicted") == 1
            member = open_replica("member")
            fill(member, "m", 2)
            outcome = await sync_once(member, relay.url)
            assert outcome.synced and outcome.ok, outcome.closed
            assert await rejections(relay.url, "handshake-evicted") == 2
            first = opened[0]
            await first.until_closed()
            assert first.dropped and not first.errors  # dropped at once, nothing more read
        await unauthenticated(relay, 0)


async def test_an_unauthenticated_connection_has_a_short_deadline(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay", handshake_timeout=0.3) as relay:
        async with strangers(relay, ["127.0.0.2"], small_hello()) as (stranger,):
            await stranger.until_closed()
            assert [e.code for e in stranger.errors] == [E_TIMEOUT]
        assert await rejections(relay.url, "timeout") == 1


async def test_a_fat_hello_is_refused_at_once(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay") as relay, \
            strangers(relay, ["127.0.0.2"], fat_hello()) as (stranger,):
        await stranger.until_closed()
        assert [e.code for e in stranger.errors] == [E_TOO_LARGE]
        assert "before authentication exceeds 4096" in stranger.errors[0].message


async def test_no_per_name_state_outlives_the_sessions_that_named_it(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay") as relay:
        idle = relay.per_name_state()
        assert set(idle.values()) == {0}
        fresh = identity()  # a device that may read what is stored, and comes last
        stored: dict[int, SpaceMaker] = {}
        devices = []
        for i in range(12):
            key = identity()
            device = EnvelopeHost(key, spaces=[f"named-{i}-{j}" for j in range(3)])  # nobody stores
            if i % 3 == 0:  # anything under those names; a third also stores a space of their own
                sp = stored[i] = SpaceMaker(key)
                device.add(sp.open(), sp.grant(fresh.public_key, Rights.READ))
            devices.append(device)
        outcomes = await asyncio.gather(*(exchange(d, relay.url) for d in devices))
        assert all(o.synced and o.ok for o in outcomes), [o.closed for o in outcomes]

        # A live session keeps its names while it runs, and only while it runs.
        live = devices[0]
        stop = asyncio.Event()
        task = asyncio.ensure_future(exchange(live, relay.url, live_until=stop))
        try:
            async def subscribed() -> bool:
                return relay.per_name_state()["subscribed_spaces"] == 4

            await wait_until(subscribed, "the live device to name its spaces")
            state = relay.per_name_state()
            assert state["subscribed_spaces"] == 4 and state["devices"] == 1 and state["authenticated"] == 1
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

        async def all_gone() -> bool:
            await relay.store.commit()
            return set(relay.per_name_state().values()) == {0}

        await wait_until(all_gone, f"the relay to forget every name (it keeps {relay.per_name_state()})")
        # What was stored is still served: a new device gets it from SQLite.
        reader = EnvelopeHost(fresh, spaces=[stored[3].space])
        outcome = await exchange(reader, relay.url)
        assert outcome.synced and len(reader.got(stored[3].space)) == 2


def test_admission_budgets() -> None:
    admission: Admission[str] = Admission(unauthenticated=3, per_address=2, authenticated=1)
    for ticket, address in (("a1", "A"), ("a2", "A"), ("b1", "B")):
        assert admission.arrive(ticket, address) == (None, None)  # room: no address limit
    refusal, evicted = admission.arrive("a3", "A")  # full, and A holds its share
    assert refusal is not None and "at most 2" in refusal and evicted is None
    assert admission.arrive("c1", "C") == (None, "a1")  # full: the oldest of the fullest address
    assert admission.unauthenticated == 3 and admission.addresses() == 3
    assert admission.authenticate("b1") is None
    assert admission.authenticate("c1") == "too many connections to this relay; retry later"
    assert admission.unauthenticated == 2 and admission.authenticated == 1
    for ticket in ("a1", "a2", "b1", "c1"):
        admission.leave(ticket)
    assert (admission.unauthenticated, admission.authenticated, admission.addresses()) == (0, 0, 0)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MAX_UNAUTHENTICATED", "0", "max_unauthenticated = 0 allows no device"),
    ("MAX_UNAUTHENTICATED_PER_ADDRESS", "0", "max_unauthenticated_per_address = 0 allows no device"),
    ("HANDSHAKE_TIMEOUT", "0", "handshake_timeout = 0.0 must be a positive number"),
])
def test_budget_settings_are_checked(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({}, environ={ENV_PREFIX + name: value})


def test_budget_settings_have_defaults_and_come_from_the_environment() -> None:
    config = load_config({}, environ={})
    assert (config.max_unauthenticated, config.max_unauthenticated_per_address,
            config.handshake_timeout, config.max_connections) == (64, 8, 5.0, 10_000)
    config = load_config({}, environ={ENV_PREFIX + "MAX_UNAUTHENTICATED": "500",
                                      ENV_PREFIX + "HANDSHAKE_TIMEOUT": "2.5"})
    assert (config.max_unauthenticated, config.handshake_timeout) == (500, 2.5)
