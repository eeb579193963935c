"""Receive benchmark: what verifying and applying other devices' envelopes costs.

    python -m crdt_sync.benchmarks.receive [--envelopes N] [--repeat N] [--batch N] [--json]

One replica writes ``--envelopes`` envelopes (each a field write of one of 150 entities and
one word appended to a long text), then fresh replicas receive them in frames of
``--batch``, the way a sync session does (``accept``: per author, with the quarantine,
clock and membership rules; the readers were let in by a grant before). Reported: CPU seconds
of the whole receive, minimum and median of ``--repeat`` runs. To compare two trees, run
the same command from each (``PYTHONPATH=<other checkout>``), alternating (trees with spaces
bound to keys: issue 12 on).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SPACE = "bench"


def build(root: Path, count: int, readers: int) -> tuple[str, list[bytes]]:
    """The writer's space (shared with ``readers`` fresh devices, ``reader-N``) and its data
    envelopes beyond the set-up the readers already hold."""
    from crdt_sync import Replica

    from ._harness import share

    with Replica(root / "writer", seal_interval=0) as writer:
        held = [Replica(root / f"reader-{turn}", seal_interval=0) for turn in range(readers)]
        try:
            space = share(writer, *held, name=SPACE)
        finally:
            for reader in held:
                reader.close()
        setup = writer.version_vector(space)
        for i in range(count):
            with writer.space(space).transaction() as tx:
                tx.entity("equipment", f"e{i % 150}").set("n", i)
                tx.entity("docs", "long").text("body").insert(0, "word ")
            writer.seal()
        envelopes = writer.sync_host.missing_envelopes(space, setup, count + 1, 1 << 30)
    return space, [env.wire for env in envelopes]


def receive_once(root: Path, space: str, wires: list[bytes], batch: int, turn: int) -> float:
    from crdt_sync import Replica

    with Replica(root / f"reader-{turn}", seal_interval=0) as reader:
        held = sum(reader.version_vector(space).values())
        start = time.process_time()
        for i in range(0, len(wires), batch):
            reader.accept(wires[i:i + batch], "bench", space)
        spent = time.process_time() - start
        assert sum(reader.version_vector(space).values()) == held + len(wires)
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
        space, wires = build(root, args.envelopes, args.repeat)
        runs = [receive_once(root, space, wires, args.batch, turn) for turn in range(args.repeat)]
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
