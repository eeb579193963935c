"""BLE benchmark: framing overhead, and modelled goodput and sync times on real-phone links.

    python -m crdt_sync.benchmarks.ble [--entities N] [--day N] [--json]

1. **Framing overhead**: bytes on air per frame, at MTU 23, 185 and 517, for frames of a few
   sizes (our chunks, ATT and L2CAP headers, link-layer packets; see
   :mod:`crdt_sync.transports.ble.model`).
2. **A real sync**, replayed on modelled links: a new device bootstraps a space of
   ``--entities`` field-like entities (inspection records: status, readings, free-text notes
   drawn from a vocabulary, so no more compressible than real notes), then catches up a day
   of ``--day`` edits; once batched (the session's ENVELOPES batches) and once with one frame
   per update (``batch_count=1``: one notification per update). The frames are the ones the
   sync session sends (sealed, over memory links: the bytes are what BLE carries); the model
   turns them into chunks, link-layer packets and time.
3. **Per-frame cost** of the session (SEALED head and AEAD tag) and of the BLE framing.

Bytes are exact; times are the model's, calibrated on published figures (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from crdt_sync import Replica
from crdt_sync.protocol import SessionConfig
from crdt_sync.protocol.session import RELIABLE_LINK
from crdt_sync.transports.base import FrameLink
from crdt_sync.transports.ble.model import (
    GATT_23_1M,
    GATT_185_IOS,
    GATT_247_2M,
    GATT_517_2M,
    L2CAP_2M,
    L2CAP_IOS,
    LINKS,
    LinkModel,
)
from crdt_sync.transports.driver import run_session
from crdt_sync.transports.memory import MemoryNetwork

SPACE = "site-bench"
WORDS = (
    "pump", "valve", "leak", "pressure", "gauge", "seal", "corrosion", "replaced", "checked",
    "filter", "motor", "bearing", "noise", "vibration", "inlet", "outlet", "flange", "gasket",
    "tightened", "worn", "cracked", "ok", "fault", "reading", "north", "south", "basement",
    "level", "panel", "breaker", "cable", "conduit", "damp", "rust", "paint", "label", "missing",
)


class Recording:
    """A FrameLink that records the size of every frame sent through it."""

    def __init__(self, inner: FrameLink) -> None:
        self.inner, self.sizes = inner, list[int]()

    @property
    def label(self) -> str:
        return self.inner.label

    async def send(self, frame: bytes) -> None:
        self.sizes.append(len(frame))
        await self.inner.send(frame)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()


def field_record(rng: random.Random, i: int) -> dict[str, Any]:
    return {"site": f"B{rng.randrange(40)}-{rng.randrange(12)}",
            "status": rng.choice(("ok", "fault", "todo")),
            "pressure": round(rng.uniform(0.5, 9.5), 2), "temp": round(rng.uniform(-5, 60), 1),
            "notes": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 16))), "n": i}


async def sync_sizes(src: Replica, dst: Replica, config: SessionConfig) -> list[int]:
    """One sync from ``src`` to ``dst``; the sizes of the frames ``src`` sent."""
    a, b = MemoryNetwork(seed=1).pair()
    rec = Recording(a)
    async with asyncio.timeout(600):
        await asyncio.gather(run_session(src, rec, config=config), run_session(dst, b, config=config))
    return rec.sizes


@dataclass
class Row:
    what: str
    link: str
    frames: int
    frame_bytes: int
    air_bytes: int
    fraction: float
    seconds: float


def framing_table() -> list[dict[str, Any]]:
    rows = []
    for link in (GATT_23_1M, GATT_185_IOS, GATT_517_2M):
        for size in (64, 300, 4096, 65536):
            cost = link.cost([size])
            rows.append({"mtu": link.att_mtu, "frame": size, "chunks": cost.chunks,
                         "chunk_bytes": cost.chunk_bytes, "ll_pdus": cost.ll_pdus,
                         "air_bytes": cost.air_bytes, "overhead": cost.air_bytes / size - 1})
    return rows


def run(entities: int, day: int) -> dict[str, Any]:
    rng = random.Random(15)
    out: dict[str, Any] = {"framing": framing_table(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Replica(root / "field", seal_interval=0) as field:
            space = field.space(SPACE)
            for start in range(0, entities, 50):  # a week of work: a seal every 50 records
                with space.transaction() as tx:
                    for i in range(start, min(entities, start + 50)):
                        tx.put("inspection", f"r{i}", field_record(rng, i))
                field.seal()
            configs = {"batched": RELIABLE_LINK, "per update": replace(RELIABLE_LINK, batch_count=1)}
            news = {label: Replica(root / f"new-{i}", seal_interval=0) for i, label in enumerate(configs)}
            try:
                boot = {}
                for label, config in configs.items():  # a new device bootstraps the space
                    news[label].keep(SPACE)
                    boot[label] = asyncio.run(sync_sizes(field, news[label], config))
                for _ in range(day):  # a day of field work: one edit, one envelope each
                    edit = {"status": rng.choice(("ok", "fault"))}
                    space.put("inspection", f"r{rng.randrange(entities)}", edit)
                    field.seal()
                catch = {label: asyncio.run(sync_sizes(field, news[label], config))
                         for label, config in configs.items()}
                for new in news.values():
                    assert new.version_vector(SPACE) == field.version_vector(SPACE)
            finally:
                for new in news.values():
                    new.close()
            for label in configs:
                for what, sizes in ((f"bootstrap {entities} entities, {label}", boot[label]),
                                    (f"catch up {day} edits, {label}", catch[label])):
                    for link in (GATT_23_1M, GATT_247_2M, L2CAP_2M, GATT_185_IOS, L2CAP_IOS):
                        cost = link.cost(sizes)
                        out["runs"].append(asdict(Row(what, link.name, len(sizes), cost.frame_bytes,
                                                      cost.air_bytes, cost.fraction, cost.seconds)))
                    out.setdefault("rates", []).append(
                        {"what": what, "frame_bytes": sum(sizes),
                         "at_300_kbit_s": LINK_300K.cost(sizes).seconds,
                         "at_20_KB_s": LINK_20K.cost(sizes).seconds})
    return out


def _fixed_rate(name: str, bytes_per_s: float) -> LinkModel:
    """A 2M, MTU 247 link whose packet rate gives ``bytes_per_s`` of full LL payloads."""
    per_event = 3
    interval = per_event * 251 * 1000 / bytes_per_s
    return LinkModel(name, 2, 247, 251, interval, per_event)


LINK_300K = _fixed_rate("300 kbit/s", 300_000 / 8)
LINK_20K = _fixed_rate("20 KB/s", 20_000)


def print_tables(result: dict[str, Any]) -> None:
    print("Framing overhead: bytes on air per frame")
    print("| ATT MTU | frame (B) | chunks | chunk bytes | LL packets | bytes on air | overhead |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in result["framing"]:
        print(f"| {r['mtu']} | {r['frame']:,} | {r['chunks']} | {r['chunk_bytes']:,} | {r['ll_pdus']} | "
              f"{r['air_bytes']:,} | {r['overhead']:.1%} |")
    print("\nGoodput and time on modelled links")
    print("| transfer | link | frames | frame bytes | bytes on air | goodput / budget | time |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in result["runs"]:
        print(f"| {r['what']} | {r['link']} | {r['frames']:,} | {r['frame_bytes']:,} | {r['air_bytes']:,} | "
              f"{r['fraction']:.2f} | {r['seconds']:.1f} s |")
    print("\nAt a given link rate (2M PHY, MTU 247, full packets at that rate)")
    print("| transfer | frame bytes | at 300 kbit/s | at 20 KB/s |")
    print("| --- | ---: | ---: | ---: |")
    for r in result["rates"]:
        print(f"| {r['what']} | {r['frame_bytes']:,} | {r['at_300_kbit_s']:.1f} s | "
              f"{r['at_20_KB_s']:.1f} s |")
    budgets = (f"{link.name}: budget {link.budget / 1000:.1f} KB/s" for link in LINKS)
    print("\nModelled links: " + "; ".join(budgets))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crdt_sync.benchmarks.ble",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--day", type=int, default=500, help="edits in a day of field work")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.entities, args.day)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
