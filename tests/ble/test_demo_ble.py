"""The demo's BLE meeting (crdt_sync/cli/demo_ble.py): two devices that edited offline meet
over the virtual radio (HCI over loopback TCP, each device's daemon on its controller) and
converge, and so do three that each take both roles; run alone as a process, it prints what
happened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.cli.demo_ble import ble_meeting
from tests.daemon_helpers import total
from tests.helpers import PROC_TIMEOUT, REPO, share
from tests.sync_helpers import fill


async def test_two_devices_meet_over_ble_and_converge(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b:
        space = share(a, b)
        fill(a, "a", 40, space)
        fill(b, "b", 10, space)
        said: list[str] = []
        meeting = await ble_meeting([a, b], space, said.append, names=["ana", "ben"])
        assert meeting.converged, said
        assert total(a, space) == total(b, space) == 50
        assert a.version_vector(space) == b.version_vector(space)
        assert meeting.sessions >= 2 and all(s.startswith("tcp-client:127.0.0.1:") for s in meeting.radio)
        assert "turn on Bluetooth LE" in said[0] and "meet over BLE and converge" in said[-1]


async def test_three_dual_role_devices_meet_over_ble_and_converge(tmp_path: Path) -> None:
    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b, \
            Replica(tmp_path / "c", seal_interval=0) as c:
        space = share(a, b, c)
        for replica, prefix in ((a, "a"), (b, "b"), (c, "c")):
            fill(replica, prefix, 10, space)
        said: list[str] = []
        meeting = await ble_meeting([a, b, c], space, said.append, names=["ana", "ben", "cy"])
        assert meeting.converged, said
        assert a.version_vector(space) == b.version_vector(space) == c.version_vector(space)
        assert total(c, space) == 30


def test_the_meeting_alone_as_a_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "crdt_sync.cli.demo_ble", "--json"], capture_output=True,
                          text=True, env=env, timeout=4 * PROC_TIMEOUT, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["converged"] is True and summary["devices"] == ["ana", "ben"]
    assert summary["envelopes_after"][0] == summary["envelopes_after"][1] > max(summary["envelopes_before"])
    assert "Traceback" not in done.stderr
