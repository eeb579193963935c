"""The networked commands as real processes: ``crdt-sync peer --relay`` sends the edits that
other ``crdt-sync`` processes make on its data directory and stops cleanly on SIGTERM;
``crdt-sync sync`` exits 0 when synced and non-zero with a clear message when the relay is
unreachable; a bad relay setting is refused before anything starts."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.protocol import SessionConfig
from crdt_sync.transports.driver import run_session
from crdt_sync.transports.websocket import connect
from tests.conftest import ReplicaFactory
from tests.helpers import CREATED, share
from tests.relay_helpers import arrival, run_cli, running_relay, spawned, synced_flag
from tests.sync_helpers import WAIT, wait_event


async def test_peer_daemon_sends_other_processes_edits_and_stops_on_sigterm(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    data = tmp_path / "field-tablet"
    office = open_replica("office")  # a second device, live on the relay: it made the space
    with Replica(data) as member:  # a member of the space: it holds its grant and keys
        space = share(office, member)
    async with running_relay(tmp_path / "relay") as relay:
        stop = asyncio.Event()
        office_synced, on_event = synced_flag(space)
        pumped = arrival(office, "pump-7", space)
        valve = arrival(office, "valve-2", space)
        link = await connect(relay.url)
        async with asyncio.timeout(6 * WAIT), asyncio.TaskGroup() as tg:
            live = tg.create_task(run_session(office, link, live=True, stop=stop, on_event=on_event,
                                              config=SessionConfig(dead_after=60.0)))
            try:
                await wait_event(office_synced, "the office device to catch up")
                async with spawned("peer", "--json", "--relay", relay.url, "--data", str(data),
                                   space) as daemon:
                    await daemon.wait_line(lambda line: "SpaceSynced" in line, "the daemon's first sync",
                                           timeout=3 * WAIT)
                    # Another process edits the daemon's data directory while it runs.
                    code, _, err = await run_cli("put", "--data", str(data), space, "equipment", "pump-7",
                                                 "status=leaking", "pressure=3.5")
                    assert code == 0, err
                    await wait_event(pumped, "the daemon to send the put's edit through the relay")
                    code, _, err = await run_cli("put", "--data", str(data), space, "equipment", "valve-2",
                                                 "open=false")
                    assert code == 0, err
                    await wait_event(valve, "the daemon to send a second process's edit")

                    daemon.signal(signal.SIGTERM)
                    assert await daemon.exit_code() == 0
                    report = json.loads(await daemon.stdout())
                    assert report["relay"] == [relay.url] and report["transports"] == ["relay"]
                    assert report["sessions"] == 1 and report["stopped"] is True
            finally:
                stop.set()
        assert live.result().closed is not None
    assert office.space(space).get("equipment", "pump-7") == {"status": "leaking", "pressure": 3.5}
    assert office.space(space).get("equipment", "valve-2") == {"open": False}


async def test_sync_command_exits_0_when_synced_and_1_when_the_relay_is_unreachable(
        tmp_path: Path) -> None:
    data = tmp_path / "device"
    with Replica(data) as member:
        space = member.space("site-42").id  # its own space: CREATED envelopes
    code, _, err = await run_cli("put", "--data", str(data), space, "equipment", "pump-1", "status=ok")
    assert code == 0, err
    async with running_relay(tmp_path / "relay") as relay:
        code, out, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", str(data))
        assert code == 0, err
        result = json.loads(out)
        assert result["synced"] is True and result["spaces"] == [space]
        assert result["sent"] == CREATED + 1
        url = relay.url
    # The relay is gone now; its port is closed.
    code, out, err = await run_cli("sync", "--json", "--relay", url, "--data", str(data))
    assert code == 1 and out == ""
    error = json.loads(err)["error"]
    assert error["kind"] == "unreachable" and "cannot reach the relay" in error["message"]
    assert url in error["message"]


async def test_relay_command_refuses_a_bad_setting_with_its_name(tmp_path: Path) -> None:
    code, out, err = await run_cli("relay", "--data", str(tmp_path / "relay"), "--port", "70000")
    assert code == 1 and out == ""
    assert "port = 70000 is not 0..65535" in err
