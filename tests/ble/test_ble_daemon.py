"""The daemon over BLE in separate processes on one virtual radio (``python -m
crdt_sync.transports.ble.virtual``: bumble controllers as HCI over loopback TCP): ``crdt-sync
peer --ble --ble-transport tcp-client:...`` and daemon nodes (tests/ble/daemon_node.py, the
same ``Peer``) discover each other, connect and sync thousands of edits; a device killed
mid-transfer comes back on its controller, resumes and converges; an edit on a LAN-only
device is carried over BLE to a relay-connected one and reaches a relay-only device. The test
waits on the processes' lines, each wait bounded; all traffic is on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.errors import NotFound
from tests.daemon_helpers import converged, total
from tests.helpers import REPO, share
from tests.relay_helpers import relay_process, run_cli, spawned
from tests.sync_helpers import WAIT, fill

LIMIT = 12 * WAIT
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


async def _line(proc: asyncio.subprocess.Process, what: str) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(LIMIT):
        text = (await proc.stdout.readline()).decode().strip()
    assert text, f"{what}: the process ended (code {proc.returncode})"
    return text


@contextlib.asynccontextmanager
async def radio(count: int) -> AsyncIterator[list[str]]:
    """The virtual radio process: ``count`` controllers, their SPECs."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crdt_sync.transports.ble.virtual", "--count", str(count), env=ENV,
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    try:
        specs = [await _line(proc, "the radio's SPECs") for _ in range(count)]
        assert all(s.startswith("tcp-client:127.0.0.1:") for s in specs), specs
        yield specs
    finally:
        await _end(proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        async with asyncio.timeout(WAIT):
            await proc.wait()


class Node:
    """A daemon node process, driven by lines (see tests/ble/daemon_node.py)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0

    @classmethod
    async def start(cls, data: Path, space: str, *options: str) -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ble.daemon_node", str(data), space, "--limit", str(LIMIT),
            *options, env=ENV, cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        node = cls(proc)
        ready = await _line(proc, f"{data.name} ready")
        assert ready.startswith("ready "), ready
        node.port = int(ready.split()[1])
        return node

    async def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await _line(self.proc, command)

    async def want(self, count: int) -> None:
        answer = await self.ask(f"want {count}")
        assert answer == f"have {count}", answer

    async def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        async with asyncio.timeout(LIMIT):
            return await self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def nodes() -> AsyncIterator[list[Node]]:
    started: list[Node] = []
    try:
        yield started
    finally:
        for node in started:
            await node.close()


def prepared(tmp_path: Path, *names: str) -> tuple[list[Path], str]:
    """Data directories holding one space shared by the first (the admin) with the others."""
    paths = [tmp_path / name for name in names]
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(Replica(p, seal_interval=0)) for p in paths]
        space = share(replicas[0], *replicas[1:], name="plant-room")
    return paths, space


async def test_a_cli_peer_over_ble_syncs_thousands_of_edits_and_live_ones(tmp_path: Path) -> None:
    (hub, tablet), space = prepared(tmp_path, "hub", "tablet")
    with Replica(tablet, seal_interval=0) as replica:
        fill(replica, "t", 2000, space)
    async with radio(2) as specs, nodes() as started:
        async with spawned("peer", "--json", "--ble-transport", specs[0], "--data", str(tablet),
                           env=ENV) as daemon:
            line = await daemon.wait_line(lambda s: "syncing:" in s, "the start line")
            assert f"ble on {specs[0]}" in line
            started.append(node := await Node.start(hub, space, "--ble", specs[1]))
            await node.want(2000)
            # Another process edits the daemon's data directory: sent over BLE as it happens.
            code, _, err = await run_cli("put", "--data", str(tablet), space, "equipment", "pump-7",
                                         "status=leaking")
            assert code == 0, err
            await node.want(2001)
            daemon.signal(signal.SIGTERM)
            assert await daemon.exit_code() == 0, daemon.lines[-10:]
            report = json.loads(await daemon.stdout())
            assert report["stopped"] is True and report["transports"] == ["ble"]
            assert report["ble"] == specs[0] and report["devices_seen"] == 1
            assert not any("Traceback" in s for s in daemon.lines)
        assert await node.stop() == 0
    with Replica(hub) as h:
        assert h.space(space).get("equipment", "pump-7") == {"status": "leaking"}
        assert h.space(space).get("equipment", "t-1999") == {"n": 1999, "by": "t"}


async def test_three_devices_converge_after_one_is_killed_mid_transfer(tmp_path: Path) -> None:
    (hub, a, c), space = prepared(tmp_path, "hub", "a", "c")
    async with radio(3) as specs, nodes() as started:
        # Every device takes both roles (the default): no role flags.
        started.append(await Node.start(a, space, "--ble", specs[1], "--fill", "1000"))
        started.append(center := await Node.start(hub, space, "--ble", specs[0]))
        await center.want(1000)
        started.append(third := await Node.start(c, space, "--ble", specs[2], "--fill", "1000"))
        await third.want(1100)  # its own thousand and a hundred of the others': mid-transfer
        third.kill()
        assert await third.proc.wait() == -signal.SIGKILL
        with Replica(c) as replica:  # cut in the middle: what arrived stays, the rest is to come
            assert 1100 <= total(replica, space) < 2000
        started.append(third := await Node.start(c, space, "--ble", specs[2]))
        for node in [*started[:2], third]:
            await node.want(2000)
        for node in [*started[:2], third]:  # no dial waited out its connect timeout
            assert await node.ask("ble") == "ble 0"
            assert await node.stop() == 0
    vvs = []
    for path in (hub, a, c):
        with Replica(path) as replica:
            assert total(replica, space) == 2000
            vvs.append(replica.version_vector(space))
    assert vvs[0] == vvs[1] == vvs[2]


async def test_a_non_member_daemon_in_its_own_process_gets_nothing(tmp_path: Path) -> None:
    """Three ``crdt-sync peer``-like processes on one virtual radio: two members, and an
    outsider that knows the space id (it keeps it) but holds no grant and no key. The members
    converge; the outsider's sessions with them end synced, having been shown nothing."""
    (admin, member), space = prepared(tmp_path, "admin", "member")
    outsider = tmp_path / "outsider"
    with Replica(outsider, seal_interval=0) as replica:
        replica.keep(space)  # the id only (say, overheard)
    async with radio(3) as specs, nodes() as started:
        started.append(await Node.start(admin, space, "--ble", specs[0], "--fill", "50"))
        started.append(x := await Node.start(outsider, space, "--ble", specs[2]))
        # Its only peer is the admin, who holds all 50 from the start: a session that ends
        # synced would have brought them, were the outsider served.
        assert await x.ask("synced 1") == "synced 1 held 0"
        started.append(b := await Node.start(member, space, "--ble", specs[1]))
        await b.want(50)  # the members still meet and converge with the outsider around
        for node in started:
            assert await node.stop() == 0
    with Replica(outsider) as replica:
        assert sum(replica.version_vector(space).values()) == 0
        with pytest.raises(NotFound):
            replica.space(space).get("equipment", "admin-1")


async def test_an_edit_on_a_lan_only_device_crosses_ble_to_the_relay(tmp_path: Path) -> None:
    (lan_only, both, relayed, remote), space = prepared(tmp_path, "lan-only", "both", "relayed",
                                                        "remote")
    async with relay_process(tmp_path / "relay") as relay, radio(2) as specs, nodes() as started:
        started.append(la := await Node.start(lan_only, space, "--lan-port", "0"))
        started.append(await Node.start(both, space, "--peer", str(la.port), "--ble", specs[0]))
        started.append(await Node.start(relayed, space, "--ble", specs[1], "--relay", relay.url))
        started.append(far := await Node.start(remote, space, "--relay", relay.url))
        assert await la.ask("put pump-7") == "put pump-7"
        await far.want(1)  # lan-only -> LAN -> both -> BLE -> relayed -> relay -> remote
        for node in started:
            await node.want(1)
            assert await node.stop() == 0
    with Replica(remote) as replica:
        assert replica.space(space).get("equipment", "pump-7") == {"status": "leaking"}


async def test_bad_ble_options_are_usage_errors_and_a_missing_radio_a_clear_error(tmp_path: Path) -> None:
    for args, message in ((("--ble-transport", "bogus:1"), "expected a bumble transport SPEC"),
                          (("--ble-transport", "tcp-client:nohost"), "tcp-client:HOST:PORT"),
                          (("--ble", "--ble-role", "sideways"), "invalid choice")):
        code, out, err = await run_cli("peer", "--json", "--data", str(tmp_path / "d"), *args)
        assert code == 2 and out == "", err
        error = json.loads(err)["error"]
        assert error["kind"] == "usage" and message in error["message"], error
    code, out, err = await run_cli("peer", "--json", "--data", str(tmp_path / "d"),
                                   "--ble-transport", "tcp-client:127.0.0.1:9")
    assert code == 1 and out == "", err
    error = json.loads(err)["error"]
    assert "cannot open the BLE radio tcp-client:127.0.0.1:9" in error["message"], error
    assert "Traceback" not in err


async def test_a_non_member_on_the_radio_gets_nothing(tmp_path: Path) -> None:
    from crdt_sync.protocol import Closed, SpaceSynced
    from crdt_sync.transports.ble.virtual import VirtualRadio
    from crdt_sync.transports.daemon import Peer

    with Replica(tmp_path / "a", seal_interval=0) as a, Replica(tmp_path / "b", seal_interval=0) as b, \
            Replica(tmp_path / "x", seal_interval=0) as x:
        space = share(a, b)
        fill(a, "a", 50, space)
        x.keep(space)  # it knows the id (say, overheard), holds no grant and no key
        outsider_done = asyncio.Event()

        def on_outsider(_transport: str, event: object) -> None:
            if isinstance(event, SpaceSynced | Closed):
                outsider_done.set()
        async with VirtualRadio(3) as air, contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(Peer(a, ble=air.specs[0], status_file=False))
            await stack.enter_async_context(Peer(b, ble=air.specs[1], status_file=False))
            await stack.enter_async_context(Peer(x, ble=air.specs[2], status_file=False,
                                                 on_session_event=on_outsider))
            await converged([a, b], space, 50, limit=LIMIT)
            async with asyncio.timeout(LIMIT):
                await outsider_done.wait()
        assert total(b, space) == 50
        assert sum(x.version_vector(space).values()) == 0
        with pytest.raises(NotFound):
            x.space(space).get("equipment", "a-1")
