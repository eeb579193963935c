"""The daemon between real hosts: three network namespaces on a bridge (the test's own
namespaces and addresses; nothing in the root namespace is touched, nothing is sent
elsewhere). Each host is a process running :mod:`tests.lan.daemon_node`.

* mDNS only: the three discover each other and converge;
* static peers only: A and C never meet, B carries A's edits to C and C's to A;
* B also runs a relay: an edit made on A (LAN only) reaches D, which only talks to the relay;
* a peer that changes its address (it restarts there) is found again by mDNS;
* the link is cut in the middle of a 10,000-entity transfer, both sides edit, the link comes
  back: they converge with nothing lost;
* ``crdt-sync peer --lan --interface eth1`` pins IPv4 and IPv6 at once; IPv6-only hosts meet;
* a flood of fake announcements from a third host: the two still meet, within bounds;
* a non-member on the same network, who knows the space's id, gets nothing of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from tests.helpers import SHARED, LineReader, share
from tests.sync_helpers import fill

TAG = f"{os.getpid() % 100000}"
BRIDGE = f"cdbr{TAG}"
HOSTS = [f"cdh{i}-{TAG}" for i in range(1, 4)]
ADDR = [f"10.233.9.{i}" for i in range(1, 4)]
REPO = Path(__file__).parents[2]
#: Bound on one host's wait: its whole run (mDNS probing takes about 1.2 s of it).
LIMIT = 90.0  # a bound, not a timing: a loaded 2-core CI box moved 10,000 envelopes in 15-30 s


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def bridge() -> Iterator[None]:
    """Three hosts (``HOSTS``, at ``ADDR``) on one bridge, in a namespace of its own."""
    try:
        _ip("netns", "add", BRIDGE)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"ip netns add failed (needs root): {exc}")
    try:
        _ip("-n", BRIDGE, "link", "add", "br0", "type", "bridge")
        _ip("-n", BRIDGE, "link", "set", "br0", "up")
        for i, (host, addr) in enumerate(zip(HOSTS, ADDR, strict=True), 1):
            _ip("netns", "add", host)
            _ip("-n", host, "link", "set", "lo", "up")
            _ip("link", "add", f"cdv{i}-{TAG}", "netns", host, "type", "veth", "peer", "name", f"cdp{i}",
                "netns", BRIDGE)
            _ip("-n", host, "link", "set", f"cdv{i}-{TAG}", "name", "eth1")
            _ip("-n", host, "addr", "add", f"{addr}/24", "dev", "eth1")
            _ip("-n", host, "link", "set", "eth1", "up")
            _ip("-n", BRIDGE, "link", "set", f"cdp{i}", "master", "br0")
            _ip("-n", BRIDGE, "link", "set", f"cdp{i}", "up")
        yield
    finally:
        for ns in (*HOSTS, BRIDGE):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


class Node:
    """One host's daemon process; its stdout lines are read on a thread, waited with a bound."""

    def __init__(self, host: str, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-m",
                                      "tests.lan.daemon_node", "--limit", str(LIMIT), *args],
                                     env=env, cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = LineReader(self.proc)
        self.seen: list[str] = []

    def expect(self, word: str) -> str:
        while (line := self.lines.next(LIMIT + 5)) is not None:
            self.seen.append(line)
            if line.startswith(word):
                return line
            if line.startswith("timeout"):
                with contextlib.suppress(queue.Empty):
                    self.seen.append(self.lines.next(5) or "")
                break
        raise AssertionError(f"no {word!r}: {self.seen}")

    def port(self) -> int:
        return int(self.expect("ready").split()[1])

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=LIMIT)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def prepare(tmp_path: Path, names: list[str], count: int) -> tuple[list[Path], str, int]:
    """Data directories sharing one space, each with ``count`` edits of its own; returns them,
    the space, and how many envelopes each will hold once converged."""
    paths = [tmp_path / name for name in names]
    replicas = [Replica(p, seal_interval=0) for p in paths]
    try:
        space = share(replicas[0], *replicas[1:])
        for replica, name in zip(replicas, names, strict=True):
            fill(replica, name, count, space)
    finally:
        for replica in replicas:
            replica.close()
    return paths, space, len(names) * count  # (counted beyond share()'s set-up, as nodes count)


def run_all(nodes: list[Node]) -> None:
    try:
        for node in nodes:
            node.expect("converged")
        codes = [node.finish() for node in nodes]
        assert codes == [0] * len(nodes), [n.seen for n in nodes]
    finally:
        for node in nodes:
            node.kill()


def test_three_hosts_discover_by_mdns_and_converge(bridge: None, tmp_path: Path) -> None:
    paths, space, want = prepare(tmp_path, ["a", "b", "c"], 10)
    nodes = [Node(host, "--data", str(path), "--space", space, "--want", str(want), "--lan",
                  "--interface", "eth1")
             for host, path in zip(HOSTS, paths, strict=True)]
    run_all(nodes)


def test_a_non_member_on_the_network_gets_nothing(bridge: None, tmp_path: Path) -> None:
    """C keeps the space's id (overheard) but holds no grant and no key: A and B converge
    over mDNS and each syncs with C, which holds none of the space's envelopes after."""
    paths, space, want = prepare(tmp_path, ["a", "b"], 10)
    with Replica(tmp_path / "c", seal_interval=0) as outsider:
        outsider.keep(space)
    # (the outsider holds nothing, not even the set-up that nodes count edits beyond)
    nodes = [Node(host, "--data", str(path), "--space", space, "--want", str(count), "--lan",
                  "--interface", "eth1", *extra)
             for host, path, count, extra in zip(HOSTS, [*paths, tmp_path / "c"], [want, want, -SHARED],
                                                 [(), (), ("--synced-peers", "2")], strict=True)]
    try:
        for node in nodes[:2]:
            node.expect("converged")
        assert nodes[2].expect("held").split() == ["held", "0"], nodes[2].seen
        codes = [node.finish() for node in nodes]
        assert codes == [0, 0, 0], [n.seen for n in nodes]
    finally:
        for node in nodes:
            node.kill()


def test_b_carries_a_to_c_who_never_meet(bridge: None, tmp_path: Path) -> None:
    """No mDNS: A and C each know only B (static peers), and end up with each other's edits."""
    paths, space, want = prepare(tmp_path, ["a", "b", "c"], 10)
    b = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want),
             "--interface", ADDR[1], "--port", "7411", "--peer", f"{ADDR[1]}:9")  # listens
    try:
        assert b.port() == 7411
        ends = [Node(HOSTS[i], "--data", str(paths[i]), "--space", space, "--want", str(want),
                     "--interface", ADDR[i], "--peer", f"{ADDR[1]}:7411") for i in (0, 2)]
    except BaseException:
        b.kill()
        raise
    run_all([ends[0], b, ends[1]])


def test_an_edit_on_a_lan_only_host_reaches_a_relay_only_device(bridge: None, tmp_path: Path) -> None:
    """A meets B over the LAN only; B runs a relay and syncs with it; D (on host C) only talks
    to that relay. A's edit, made once all run, reaches D through B."""
    paths, space, held = prepare(tmp_path, ["a", "b", "d"], 0)
    want = 5  # A's five live edits, everywhere
    relay = f"ws://{ADDR[1]}:7412"
    b = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want),
             "--interface", ADDR[1], "--port", "7411", "--peer", f"{ADDR[1]}:9",
             "--relay-server", "7412", "--relay", relay)
    nodes = [b]
    try:
        b.port()
        d = Node(HOSTS[2], "--data", str(paths[2]), "--space", space, "--want", str(want),
                 "--relay", relay)
        nodes.append(d)
        d.port()
        a = Node(HOSTS[0], "--data", str(paths[0]), "--space", space, "--want", str(want),
                 "--interface", ADDR[0], "--peer", f"{ADDR[1]}:7411", "--fill", "5", "--prefix", "field")
        nodes.append(a)
        assert held == 0
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    run_all([a, b, d])


def test_a_peer_that_changes_address_is_found_again(bridge: None, tmp_path: Path) -> None:
    """B meets A by mDNS, leaves, comes back at another address with new edits: A finds it."""
    paths, space, want = prepare(tmp_path, ["a", "b"], 5)
    a = Node(HOSTS[0], "--data", str(paths[0]), "--space", space, "--want", str(want + 3), "--lan",
             "--interface", ADDR[0])
    try:
        b = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want), "--lan",
                 "--interface", ADDR[1])
        b.expect("converged")
        assert b.finish() == 0
        _ip("-n", HOSTS[1], "addr", "del", f"{ADDR[1]}/24", "dev", "eth1")
        _ip("-n", HOSTS[1], "addr", "add", "10.233.9.44/24", "dev", "eth1")
        b = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want + 3), "--lan",
                 "--interface", "10.233.9.44", "--fill", "3", "--prefix", "moved")
        run_all([a, b])
    finally:
        a.kill()


def test_a_cut_mid_transfer_then_edits_on_both_sides_lose_nothing(bridge: None, tmp_path: Path) -> None:
    paths, space, held = prepare(tmp_path, ["a", "b"], 0)
    with Replica(paths[0], seal_interval=0) as a:
        fill(a, "bulk", 10_000, space)
    want = 10_000 + 2  # and one edit on each side while the link is down
    a_node = Node(HOSTS[0], "--data", str(paths[0]), "--space", space, "--want", str(want),
                  "--interface", ADDR[0], "--port", "7411", "--peer", f"{ADDR[0]}:9")
    nodes = [a_node]
    try:
        a_node.port()
        b_node = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want),
                      "--interface", ADDR[1], "--peer", f"{ADDR[0]}:7411", "--progress", "1500")
        nodes.append(b_node)
        b_node.expect("progress")
        _ip("-n", HOSTS[1], "link", "set", "eth1", "down")  # the cut, mid-transfer
        try:
            for path, who in ((paths[0], "a"), (paths[1], "b")):
                done = subprocess.run([sys.executable, "-m", "crdt_sync.cli", "put", "--data", str(path),
                                       space, "equipment", f"cut-{who}", f"by={who}"],
                                      env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                                      text=True, timeout=LIMIT)
                assert done.returncode == 0, done.stderr
        finally:
            _ip("-n", HOSTS[1], "link", "set", "eth1", "up")
        assert held == 0
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    run_all(nodes)


def test_the_cli_daemon_over_mdns_on_an_interface_by_name_with_ipv6(bridge: None, tmp_path: Path) -> None:
    """``crdt-sync peer --lan --interface eth1`` (IPv4 and a ULA IPv6 address on it) meets a
    daemon on another host by mDNS; SIGTERM stops it with exit 0."""
    import signal

    for i, host in enumerate(HOSTS[:2], 1):
        _ip("-n", host, "-6", "addr", "add", f"fd42:233:9::{i}/64", "dev", "eth1", "nodad")
    paths, space, want = prepare(tmp_path, ["a", "b"], 10)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cli = subprocess.Popen(["ip", "netns", "exec", HOSTS[0], sys.executable, "-m", "crdt_sync.cli", "peer",
                            "--json", "--lan", "--interface", "eth1", "--data", str(paths[0])],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        b = Node(HOSTS[1], "--data", str(paths[1]), "--space", space, "--want", str(want), "--lan",
                 "--interface", "eth1")
        try:
            b.expect("converged")
        finally:
            b.kill()
        cli.send_signal(signal.SIGTERM)
        out, err = cli.communicate(timeout=LIMIT)
        assert cli.returncode == 0, err
        report = json.loads(out)
        assert report["stopped"] and report["transports"] == ["lan"]
        assert set(report["lan"]["addresses"]) == {ADDR[0], "fd42:233:9::1"}, report
        assert "Traceback" not in err
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(timeout=10)


def test_ipv6_only_hosts_discover_and_converge(bridge: None, tmp_path: Path) -> None:
    """Both pinned to a ULA IPv6 address alone: mDNS over IPv6 (ff02::fb), sessions over IPv6."""
    v6 = [f"fd42:233:9::{i}" for i in (1, 2)]
    for host, addr in zip(HOSTS[:2], v6, strict=True):
        _ip("-n", host, "-6", "addr", "add", f"{addr}/64", "dev", "eth1", "nodad")
    paths, space, want = prepare(tmp_path, ["a", "b"], 10)
    run_all([Node(host, "--data", str(path), "--space", space, "--want", str(want), "--lan",
                  "--interface", addr)
             for host, path, addr in zip(HOSTS[:2], paths, v6, strict=True)])


def test_a_flood_of_fake_announcements_is_bounded(bridge: None, tmp_path: Path) -> None:
    """Host C announces 300 fake services (half with garbage TXT records, half pointing at
    ports where nothing listens) before A and B start: they still meet and converge, and
    A's candidate table stays within its bound."""
    from crdt_sync.transports.lan._peers import MAX_CANDIDATES

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    flood = subprocess.Popen(["ip", "netns", "exec", HOSTS[2], sys.executable, "-m", "tests.lan.flood_node",
                              ADDR[2], "300"], env=env, cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    nodes: list[Node] = []
    try:
        lines = LineReader(flood)
        assert (lines.next(LIMIT) or "").startswith("flooding"), lines.rest(5)
        paths, space, want = prepare(tmp_path, ["a", "b"], 10)
        # once converged, A waits until discovery reported 100 of the 150 well-formed fakes
        nodes = [Node(host, "--data", str(path), "--space", space, "--want", str(want), "--lan",
                      "--interface", addr, *(("--found", "100") if host == HOSTS[0] else ()))
                 for host, path, addr in zip(HOSTS[:2], paths, ADDR[:2], strict=True)]
        for node in nodes:
            node.expect("converged")
        table = json.loads(nodes[0].expect("table").split(" ", 1)[1])
        assert table["candidates"] <= MAX_CANDIDATES and table["evicted"] > 0, table
        assert table["refused"] > 0, table  # garbage TXT records and ports that refuse
        assert [node.finish() for node in nodes] == [0, 0]
    finally:
        for node in nodes:
            node.kill()
        if flood.stdin:
            flood.stdin.close()
        try:
            flood.wait(timeout=10)
        except subprocess.TimeoutExpired:
            flood.kill()
