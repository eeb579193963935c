"""Every benchmark runs end to end in its smallest mode and prints its table.

Each runs as ``python -m crdt_sync.benchmarks.<name>`` in a subprocess (most of them start
children of their own), with sizes far below a real run: on spaces bound to keys, with the
relay enforcing membership, a benchmark that no longer holds together (a device naming a
space it was never given, a payload read as plaintext) fails here. The checks are on the
rows printed, never on timings. ``lan_netns`` needs root (``ip netns``) and is skipped
without it; the trace-replaying parts need the shared editing traces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "traces"
PAPER = TRACES / "seq-automerge-paper.json.gz"
TIMEOUT = 120


def bench(name: str, *args: str) -> str:
    """Run one benchmark; its stdout (it must exit 0)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-m", f"crdt_sync.benchmarks.{name}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def rows(out: str, *labels: str) -> None:
    for label in labels:
        assert label in out, f"no {label!r} in:\n{out}"


def test_backlog() -> None:
    out = bench("backlog", "--envelopes", "50", "--repeat", "1")
    rows(out, "backlog to a relay", "│ 50 ", "default")


def test_big_space(tmp_path: Path) -> None:
    out = bench("big_space", "--entities", "100", "--batch", "50", "--repeat", "1", "--tmpdir", str(tmp_path))
    rows(out, "100 in transactions of 50", "space.find(site=42)", "(100 entities)")


def test_ble() -> None:
    out = bench("ble", "--entities", "50", "--day", "10")
    rows(out, "Framing overhead", "| bootstrap 50 entities, batched | GATT, MTU 23, 1M PHY |",
         "| catch up 10 edits, per update | L2CAP CoC, 2M PHY, DLE |")


def test_join(tmp_path: Path) -> None:
    out = bench("join", "--entities", "50", "--batch", "25", "--repeat", "1", "--tmpdir", str(tmp_path))
    rows(out, "(membership on)", "│ full history ", "read all 50 entities", "encrypted")
    assert "snapshot + tail" not in out  # --snapshot off by default


def test_join_snapshot(tmp_path: Path) -> None:
    out = bench("join", "--entities", "50", "--batch", "25", "--repeat", "1", "--snapshot", "both",
                "--tmpdir", str(tmp_path))
    rows(out, "(membership on)", "│ full history ", "│ snapshot + tail ", "relay: stored",
         "read all 50 entities", "(content equal)")


def test_lan() -> None:
    out = bench("lan", "--entities", "20", "--rate", "10", "--seconds", "1")
    rows(out, "start to converged, 20 envelopes each", "live edit visible on B, p50 (10 edits at 10/s)",
         "live edit visible on B, p99")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip netns, tc)")
def test_lan_netns() -> None:
    out = bench("lan_netns", "--entities", "50", "--seconds", "1", "--rate", "10")
    rows(out, "start to converged (100 edits each", "live edit visible, p99",
         "catch-up 50 envelopes", "tc tbf 20mbit")


def test_local_store() -> None:
    report = json.loads(bench("local_store", "--entities", "50", "--keystrokes", "50", "--per-seal", "10",
                              "--list", "50"))
    assert report["index"]["entities"] == 50 and report["index"]["index_rows"] > 0
    assert [(r["per_seal"], r["chars"]) for r in report["reopen"]] == [(10, 50)]
    assert [r["entities"] for r in report["list"]] == [50]


def test_merge(tmp_path: Path) -> None:
    out = bench("merge", "--quick", "--engines", "ours,pycrdt", "--field-sizes", "20", "--devices", "3",
                "--rounds", "1", "--no-setup", "--out", str(tmp_path / "out"), "--tmpdir", str(tmp_path))
    rows(out, "crdt-sync (full write path)", "pycrdt (raw)", "field-20")
    assert (tmp_path / "out" / "results.json").is_file()


def test_receive() -> None:
    out = bench("receive", "--envelopes", "40", "--repeat", "1", "--batch", "16")
    rows(out, "40 envelopes in frames of 16: receive CPU")


def test_relay_load(tmp_path: Path) -> None:
    out = bench("relay_load", "--quick", "--devices", "20", "--team-size", "5", "--typing-devices", "4",
                "--duration", "2", "--warmup", "0.5", "--drain", "1", "--idle", "0",
                "--servers", "crdt-sync-members", "--tmpdir", str(tmp_path))
    rows(out, "relay load: 20 devices", "membership on", "details")


def test_rotation() -> None:
    out = bench("rotation", "--members", "5", "--repeat", "1")
    rows(out, "key rotation", "│ 5 ", "5/5")


def test_sync(tmp_path: Path) -> None:
    only = [] if PAPER.is_file() else ["--only", "space"]
    out = bench("sync", "--quick", "--entities", "100", "--changes", "5", "--prefix", "300",
                "--behind", "1,5", "--trace", str(PAPER), "--tmpdir", str(tmp_path), *only)
    rows(out, "A. 100 entities on A and B, 5 changed on A", "crdt-sync, one envelope per change",
         "Yjs per doc (100), both ways", "B: first full sync of the space")
    if PAPER.is_file():
        rows(out, "B. catch-up on automerge-paper (300 edits)", "y-protocols, both ways")


@pytest.mark.skipif(not PAPER.is_file(), reason=f"no editing trace at {PAPER}")
def test_write_path(tmp_path: Path) -> None:
    out = bench("write_path", "--turns", "--repeat", "1", "--limit", "300", "--trace", str(PAPER),
                "--tmpdir", str(tmp_path))
    rows(out, "write path: seq-automerge-paper")
    for engine in ("raw pycrdt", "crdt-sync"):
        assert re.search(rf"│ {engine}\s+│\s+300 │", out), f"no row of {engine} (300 edits) in:\n{out}"
