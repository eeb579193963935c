"""The load and what every process of the relay load benchmark shares: the servers, the
edits (their markers and Yjs updates) and the latency histogram.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from .._harness import BenchmarkError

MODULE = "crdt_sync.benchmarks.relay_load"
SERVERS = {"crdt-sync": "crdt-sync relay", "pycrdt-websocket": "pycrdt-websocket",
           "pycrdt-websocket-ystore": "pycrdt-websocket + SQLiteYStore",
           "crdt-sync-baseline": "crdt-sync relay (--baseline tree)",
           "crdt-sync-sealed": "crdt-sync relay, sealed spaces, membership off",
           "crdt-sync-members": "crdt-sync relay, sealed spaces, membership on"}
#: servers that speak crdt-sync's protocol (the same load generator drives them); the sealed
#: ones are driven with spaces as issue 12 makes them (``_spaces``)
OURS = ("crdt-sync", "crdt-sync-baseline", "crdt-sync-sealed", "crdt-sync-members")
LISTENING = "listening on ws://127.0.0.1:"
#: How long every wait on the other side (barrier, server start) may take.
WAIT_LIMIT = 300.0


# -- the load -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Load:
    devices: int
    team_size: int
    typing_devices: int
    typing_rate: float
    team_rate: float
    warmup: float
    duration: float
    drain: float
    idle: float
    seed: int

    @property
    def end(self) -> float:
        """Seconds after the start at which the last edit is scheduled."""
        return self.warmup + self.duration

    def spaces(self) -> list[tuple[str, str, float, list[int]]]:
        """``(name, kind, rate, device indices)``; devices ``0 .. typing_devices-1`` type."""
        out: list[tuple[str, str, float, list[int]]] = []
        if self.typing_devices:
            out.append(("typing", "typing", self.typing_rate, list(range(self.typing_devices))))
        team = list(range(self.typing_devices, self.devices))
        teams = max(1, math.ceil(len(team) / self.team_size)) if team else 0
        for t in range(teams):  # near-equal teams: sizes differ by at most one
            members = team[t::teams]
            out.append((f"team-{t:05d}", "team", self.team_rate, members))
        return out

    def schedule(self, rate: float, rng: random.Random) -> tuple[float, int, int, int]:
        """A device's ``(phase, edits, first edit in the window, first edit after it)``."""
        interval = 1.0 / rate
        phase = rng.uniform(0.0, interval)
        edits = max(0, math.ceil((self.end - phase) / interval))
        lo = max(0, math.ceil((self.warmup - phase) / interval))
        return phase, edits, min(lo, edits), edits


def load_dict(load: Load) -> dict[str, Any]:
    return {f: getattr(load, f) for f in Load.__dataclass_fields__}


def device_seed(load: Load, device: int) -> bytes:
    return hashlib.blake2b(f"relay-load/{load.seed}/{device}".encode(), digest_size=32).digest()


def marker(device: int, edit: int) -> str:
    """Text an edit inserts: it identifies the edit inside a Yjs update (pycrdt-websocket)."""
    return f"#Q{device:06d}.{edit:07d};"


def parse_marker(data: bytes) -> tuple[int, int] | None:
    i = data.find(b"#Q")
    while i >= 0:
        dev, dot, edit, end = data[i + 2:i + 8], data[i + 8:i + 9], data[i + 9:i + 16], data[i + 16:i + 17]
        if dot == b"." and end == b";" and dev.isdigit() and edit.isdigit():
            return int(dev), int(edit)
        i = data.find(b"#Q", i + 1)
    return None


def yjs_updates(device: int, edits: int) -> list[bytes]:
    """The Yjs update of each edit of one device: text typed into the space's shared text."""
    from pycrdt import Doc, Text

    doc: Any = Doc(client_id=device + 1)
    text = doc.get("text", type=Text)
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    for k in range(edits):
        with doc.transaction():
            text.insert(len(text), marker(device, k))
    doc.unobserve(subscription)
    if len(updates) != edits:
        raise BenchmarkError(f"device {device}: {len(updates)} Yjs updates for {edits} edits")
    return updates


# -- latency histogram (mergeable across generator processes) ------------------------------
_BASE = math.log(1.02)  # 2 % wide buckets


class Histogram:
    """Latencies in 2 % buckets; edits never delivered count as infinitely late."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = counts or {}

    def add(self, seconds: float) -> None:
        b = int(math.log(max(seconds, 1e-6) * 1e6) / _BASE)
        self.counts[b] = self.counts.get(b, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: Histogram) -> None:
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c

    def quantile(self, q: float, expected: int | None = None) -> float:
        """Seconds; ``inf`` when the rank falls among the ``expected - total`` missing."""
        total = max(self.total, expected or 0)
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return math.exp((b + 1) * _BASE) / 1e6  # the bucket's upper edge
        return math.inf

    def as_json(self) -> dict[str, int]:
        return {str(b): c for b, c in self.counts.items()}

    @classmethod
    def from_json(cls, raw: dict[str, int]) -> Histogram:
        return cls({int(b): int(c) for b, c in raw.items()})
