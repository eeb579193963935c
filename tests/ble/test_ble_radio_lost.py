"""A BLE radio lost under a running daemon (its HCI transport drops: a USB dongle pulled, a
``tcp-client:`` controller gone) is reopened by the daemon with backoff, and BLE sync resumes.

Real parts throughout: daemons (``Peer``) on a :class:`VirtualRadio` (bumble controllers served
as HCI over loopback TCP), whose :meth:`~VirtualRadio.drop` closes one controller's host
connection and stops listening, and :meth:`~VirtualRadio.restore` serves a fresh controller on
the same SPEC. Every wait is on an event, bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.transports.ble import BleTransport
from crdt_sync.transports.ble.virtual import VirtualRadio
from crdt_sync.transports.daemon import Peer, read_status
from crdt_sync.transports.interface import LinkServer, ManagedTransport
from crdt_sync.transports.lan import LanTransport
from tests.daemon_helpers import converged, total
from tests.helpers import REPO, share
from tests.relay_helpers import run_cli, spawned
from tests.sync_helpers import WAIT, fill

LIMIT = 4 * WAIT
#: Quick attempts, so that a test does not wait out long backoffs.
QUICK = (0.2, 1.0)
LOOP = "127.0.0.1"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _ble(peer: Peer) -> dict[str, object]:
    states = peer.status()["transport_states"]
    return next(s for s in states if s["name"] == "ble")


async def test_a_transport_notices_its_radio_is_lost_and_ends(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "crdt_sync.ble")
    with Replica(tmp_path / "a", seal_interval=0) as a:
        async with asyncio.timeout(LIMIT), VirtualRadio(1) as air, \
                BleTransport(a, air.specs[0]) as ble:
            assert ble.lost is None
            await air.drop(0)
            async for _event in ble.events():  # the stream ends by itself
                pass
            assert ble.lost is not None and air.specs[0] in ble.lost, ble.lost
    lost = [r for r in caplog.records if r.getMessage() == "ble.radio.lost"]
    assert len(lost) == 1 and air.specs[0] in lost[0].fields["reason"]  # type: ignore[attr-defined]


async def test_a_dropped_radio_is_reopened_and_ble_sync_resumes(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "crdt_sync")
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", 20, space)
        fill(b, "b", 20, space)
        async with VirtualRadio(2) as air, contextlib.AsyncExitStack() as stack:
            pa = await stack.enter_async_context(Peer(a, ble=air.specs[0], status_file=False,
                                                      reopen_backoff=QUICK))
            pb = await stack.enter_async_context(Peer(b, ble=air.specs[1], status_file=False,
                                                      reopen_backoff=QUICK))
            await converged([a, b], space, 40, limit=LIMIT)
            async with asyncio.timeout(LIMIT):
                await pa.wait_connected(1)
                first = pa.transports[0]
                await air.drop(0)
                await pa.wait_transport("ble", "down")  # a's radio is gone ...
                await pb.wait_disconnected(a.device_id)  # ... and b's connection to it timed out
                await pa.wait_disconnected(b.device_id)
            assert "HCI transport" in str(_ble(pa)["reason"])
            fill(a, "a2", 15, space)  # edits on both while the radio is down
            fill(b, "b2", 15, space)
            assert total(a, space) == total(b, space) == 55
            await air.restore(0)
            async with asyncio.timeout(LIMIT):
                await pa.wait_transport("ble", "up")  # reopened by itself
            assert pa.transports[0] is not first and _ble(pa)["reopened"] == 1
            await converged([a, b], space, 70, limit=LIMIT)
            assert pb.transport_state("ble") == "up"
    messages = [r.getMessage() for r in caplog.records]
    assert "ble.radio.lost" in messages and "daemon.transport.reopened" in messages
    assert not any(r.exc_info for r in caplog.records)


async def test_a_radio_that_stays_down_leaves_the_daemon_and_its_lan_running(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "crdt_sync")
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        async with VirtualRadio(2) as air, contextlib.AsyncExitStack() as stack:
            def listen(serve: LinkServer) -> ManagedTransport:
                return LanTransport(b, [LOOP], mdns=False, serve=serve)
            pb = await stack.enter_async_context(Peer(b, ble=air.specs[1], transports=[listen],
                                                      status_file=False, reopen_backoff=QUICK))
            port = pb.lan_transport.port
            pa = await stack.enter_async_context(Peer(a, ble=air.specs[0], interfaces=[LOOP],
                                                      static_peers=[(LOOP, port)],
                                                      reopen_backoff=QUICK))
            async with asyncio.timeout(LIMIT):
                await pa.wait_connected(1)
                await air.drop(0)
                await pa.wait_transport("ble", "down")
                for _ in range(2):  # attempts fail (nothing listens there) and are retried
                    await pa.wait_transport("ble", "reopening")
                    await pa.wait_transport("ble", "down")
            fill(a, "a", 10, space)  # the LAN still carries edits both ways
            fill(b, "b", 10, space)
            await converged([a, b], space, 20, limit=LIMIT)
            assert pa.connected == {b.device_id: "lan"} and pb.connected == {a.device_id: "lan"}
            state = _ble(pa)
            assert state["state"] in ("down", "reopening") and state["attempts"] >= 2, state
            assert "cannot open the BLE radio" in str(state["reason"]), state
            assert pa.transport_state("lan") == "up"
            async with asyncio.timeout(WAIT):
                await stack.aclose()  # closes promptly, mid-backoff
        status = read_status(a.path)
        assert status is not None and status["running"] is False
        assert status["transports"] == ["lan", "ble"]
        ble = next(s for s in status["transport_states"] if s["name"] == "ble")
        assert ble["state"] in ("down", "reopening") and "cannot open" in ble["reason"], ble
    code, out, err = await run_cli("status", "--json", "--data", str(tmp_path / "a"))
    assert code == 0, err
    shown = {t["name"]: t for t in json.loads(out)["daemon"]["transport_states"]}
    assert shown["lan"]["state"] == "up" and shown["ble"]["state"] in ("down", "reopening")
    assert "cannot open the BLE radio" in shown["ble"]["reason"], shown
    code, out, err = await run_cli("status", "--data", str(tmp_path / "a"))
    assert code == 0 and "transports down" in out and "cannot open" in out, out + err
    reopen = [r for r in caplog.records if r.getMessage() == "daemon.transport.reopen"]
    assert reopen and all("reason" in r.fields for r in reopen)  # type: ignore[attr-defined]
    assert not any(r.exc_info for r in caplog.records)


async def test_closing_the_daemon_while_it_backs_off_ends_promptly(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a:
        async with VirtualRadio(1) as air:
            peer = Peer(a, ble=air.specs[0], status_file=False, reopen_backoff=(60.0, 60.0))
            async with asyncio.timeout(LIMIT):
                await peer.__aenter__()
                await air.drop(0)
                await peer.wait_transport("ble", "down")
                await peer._wait(lambda: _ble(peer)["next_attempt"] is not None)  # backing off
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with asyncio.timeout(WAIT):
                await peer.close()
            assert loop.time() - started < 2.0  # not the minute's backoff
            assert peer.transport_state("ble") == "down"


async def test_crdt_sync_peer_reopens_its_radio_and_says_so(tmp_path: Path) -> None:
    """``crdt-sync peer --ble-transport`` as a process: the loss and each failed attempt are
    JSON lines on stderr with their reason (no traceback); it reconnects by itself."""
    with Replica(tmp_path / "a", seal_interval=0) as a:
        a_id = a.device_id
        with Replica(tmp_path / "b", seal_interval=0) as b:
            share(b, a)
    with Replica(tmp_path / "b", seal_interval=0) as b:
        async with VirtualRadio(2) as air, spawned(
                "peer", "--json", "--ble-transport", air.specs[0], "--data", str(tmp_path / "a"),
                env=ENV) as daemon, Peer(b, ble=air.specs[1], status_file=False) as pb:
            await daemon.wait_line(lambda s: "syncing:" in s, "the start line", timeout=LIMIT)
            async with asyncio.timeout(LIMIT):
                await pb.wait_connected(1)
                await air.drop(0)
                await pb.wait_disconnected(a_id)
            lost = json.loads(await daemon.wait_line(lambda s: "ble.radio.lost" in s, "the loss",
                                                     timeout=LIMIT))
            assert air.specs[0] in lost["reason"], lost
            failed = json.loads(await daemon.wait_line(lambda s: "daemon.transport.reopen" in s,
                                                       "a failed attempt", timeout=LIMIT))
            assert failed["transport"] == "ble" and "cannot open" in failed["reason"], failed
            await air.restore(0)
            async with asyncio.timeout(LIMIT):
                await pb.wait_connected(1)  # the reopened radio found b again
            assert set(pb.connected) == {a_id}
            daemon.signal(signal.SIGTERM)
            assert await daemon.exit_code() == 0, daemon.lines[-10:]
            assert not any("Traceback" in line for line in daemon.lines), daemon.lines
    code, out, err = await run_cli("status", "--json", "--data", str(tmp_path / "a"))
    assert code == 0, err
    shown = {t["name"]: t for t in json.loads(out)["daemon"]["transport_states"]}
    assert shown["ble"]["state"] == "up" and shown["ble"]["reopened"] == 1, shown
