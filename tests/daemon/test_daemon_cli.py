"""``crdt-sync peer`` (the daemon) and ``crdt-sync status`` as real processes on loopback: the
daemon syncs with a LAN peer, sends the edits other processes make on its data directory,
stops on SIGTERM with exit 0, and status then shows the peer, its transport and address, and
when each space last synced. Bad options fail with a clear message, never a traceback."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from crdt_sync import Replica
from tests.daemon.test_daemon import LOOP, listener
from tests.daemon_helpers import converged, total
from tests.helpers import share
from tests.relay_helpers import arrival, run_cli, spawned
from tests.sync_helpers import WAIT, fill, wait_event


async def test_peer_over_lan_syncs_live_stops_on_sigterm_and_status_shows_the_link(tmp_path: Path) -> None:
    laptop = Replica(tmp_path / "laptop", seal_interval=0)
    with Replica(tmp_path / "tablet", seal_interval=0) as tablet:
        space = share(laptop, tablet)
        fill(tablet, "t", 20, space)
        tablet_id = tablet.device_id
    with laptop:  # the tablet's data directory is the daemon's now
        fill(laptop, "l", 10, space)
        pumped = arrival(laptop, "pump-7", space)
        async with listener(laptop) as peer:
            port = peer.lan_transport.port
            async with spawned("peer", "--json", "--interface", LOOP, "--peer", f"{LOOP}:{port}",
                               "--data", str(tmp_path / "tablet")) as daemon:
                line = await daemon.wait_line(lambda s: "syncing:" in s, "the start line")
                assert f"lan on {LOOP}:" in line
                await converged([laptop], space, 30)
                # Another process edits the daemon's data directory while it runs.
                code, _, err = await run_cli("put", "--data", str(tmp_path / "tablet"), space,
                                             "equipment", "pump-7", "status=leaking")
                assert code == 0, err
                await wait_event(pumped, "the daemon to send another process's edit over the LAN")
                daemon.signal(signal.SIGTERM)
                assert await daemon.exit_code() == 0, daemon.lines[-10:]
                report = json.loads(await daemon.stdout())
                assert report["stopped"] is True and report["transports"] == ["lan"]
                assert report["lan"]["addresses"] == [LOOP] and report["devices_seen"] == 1
                assert not any("Traceback" in s for s in daemon.lines)
        assert laptop.space(space).get("equipment", "pump-7") == {"status": "leaking"}
        assert total(laptop, space) == 31
        laptop_id = laptop.device_id
    code, out, err = await run_cli("status", "--json", "--data", str(tmp_path / "tablet"))
    assert code == 0, err
    status = json.loads(out)
    assert status["device"] == tablet_id
    peers = {p["device"]: p for p in status["spaces"][space]["peers"]}
    seen = peers[laptop_id]
    assert seen["transport"] == "lan" and seen["address"].startswith(f"ws://{LOOP}:")
    assert seen["last_synced"] is not None and seen["connected"] is False
    assert seen["behind"] == 0
    assert status["daemon"]["running"] is False and status["daemon"]["transports"] == ["lan"]
    code, out, err = await run_cli("status", "--data", str(tmp_path / "tablet"))  # the human form
    assert code == 0 and "daemon  stopped" in out and "over" in out, err


@pytest.mark.parametrize(("args", "message"), [
    ((), "nothing to sync with"),
    (("--lan", "--interface", "nosuch0"), "no interface named 'nosuch0'"),
    (("--lan", "--interface", "203.0.113.77"), "not an address of this machine"),
    (("--peer", "no-port-here"), "expected HOST:PORT"),
    (("--peer", "h:70000"), "expected HOST:PORT"),
    (("--relay", "http://x"), "starts with ws://"),
    (("--peer", "127.0.0.1:9", "--interface", "127.0.0.1", "--port", "-1"), "0..65535"),
])
async def test_bad_options_are_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    code, out, err = await run_cli("peer", "--json", "--data", str(tmp_path / "d"), *args)
    assert code == 2 and out == "", err
    error = json.loads(err)["error"]
    assert error["kind"] == "usage" and message in error["message"], error
    assert "Traceback" not in err


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server((LOOP, 0)) as taken:
        port = taken.getsockname()[1]
        code, out, err = await run_cli("peer", "--json", "--data", str(tmp_path / "d"), "--interface",
                                       LOOP, "--port", str(port), "--peer", f"{LOOP}:9", timeout=WAIT)
    assert code == 1 and out == "", err
    error = json.loads(err)["error"]
    assert "cannot listen on the LAN" in error["message"] and "Traceback" not in err
