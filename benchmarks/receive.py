"""Receive benchmark: what verifying and applying other devices' envelopes costs.

    python -m crdt_sync.benchmarks.receive [--envelopes N] [--repeat N] [--batch N] [--json]

One replica writes ``--envelopes`` envelopes (each a field write of one of 150 entities and
one word appended to a long text), then fresh replicas receive them in frames of
``--batch``, the way a sync session does (``accept`` where the tree has it: per author,
with the quarantine and clock rules; ``receive`` on trees before it). Reported: CPU seconds
of the whole receive, minimum and median of ``--repeat`` runs. To compare two trees, run
the same command from each (``PYTHONPATH=<other checkout>``), alternating; the script uses
only APIs both sides have.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE = "bench"


def build(root: Path, count: int) -> list[bytes]:
    from crdt_sync import Replica

    with Replica(root / "writer", seal_interval=0) as writer:
        space = writer.space(SPACE)
        for i in range(count):
            with space.transaction() as tx:
                tx.entity("equipment", f"e{i % 150}").set("n", i)
                tx.entity("docs", "long").text("body").insert(0, "word ")
            writer.seal()
        envelopes = writer.sync_host.missing_envelopes(SPACE, {}, count + 1, 1 << 30)
    return [env.wire for env in envelopes]


def receive_once(root: Path, wires: list[bytes], batch: int, turn: int) -> float:
    from crdt_sync import Replica

    with Replica(root / f"reader-{turn}", seal_interval=0) as reader:
        reader.keep(SPACE)
        take: Any = getattr(reader, "accept", None)
        start = time.process_time()
        for i in range(0, len(wires), batch):
            frame = wires[i:i + batch]
            if take is not None:
                take(frame, "bench", SPACE)
            else:
                reader.receive(frame, "bench", SPACE, tolerate_gaps=True)
        spent = time.process_time() - start
        assert reader.version_vector(SPACE) and sum(reader.version_vector(SPACE).values()) == len(wires)
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crdt_sync.benchmarks.receive",
                                description=(__doc__ or "").split("\n")[0])
    p.add_argument("--envelopes", type=int, default=1500)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="crdt-sync-receive-"))
    try:
        wires = build(root, args.envelopes)
        runs = [receive_once(root, wires, args.batch, turn) for turn in range(args.repeat)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    import crdt_sync

    result = {"tree": str(Path(crdt_sync.__file__).parent.parent), "envelopes": len(wires),
              "batch": args.batch, "cpu_s_min": round(min(runs), 4),
              "cpu_s_median": round(statistics.median(runs), 4),
              "us_per_envelope_min": round(min(runs) / len(wires) * 1e6, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['tree']}: {len(wires)} envelopes in frames of {args.batch}: receive CPU "
              f"min {result['cpu_s_min']:.3f} s, median {result['cpu_s_median']:.3f} s "
              f"({result['us_per_envelope_min']} µs per envelope)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
