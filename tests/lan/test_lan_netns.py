"""Two hosts in network namespaces joined by a veth pair: mDNS discovery and convergence."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

NS = (f"crdtlan-a{os.getpid()}", f"crdtlan-b{os.getpid()}")
ADDR = ("10.232.7.1", "10.232.7.2")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[None]:
    try:
        _ip("netns", "add", NS[0])
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"ip netns add failed (needs root): {exc}")
    try:
        _ip("netns", "add", NS[1])
        _ip("link", "add", "crdtlv0", "netns", NS[0], "type", "veth", "peer", "name", "crdtlv1",
            "netns", NS[1])
        for ns, dev, addr in ((NS[0], "crdtlv0", ADDR[0]), (NS[1], "crdtlv1", ADDR[1])):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        yield
    finally:
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def test_mdns_discovery_converges(namespaces: None, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.lan.node",
                               str(tmp_path / name), addr, "10", "20", "20"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for ns, addr, name in zip(NS, ADDR, ("a", "b"), strict=True)]
    outputs = [p.communicate(timeout=40)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
