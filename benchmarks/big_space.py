"""Large-space benchmark: create a space of many small entities, then open it cold.

    python -m benchmarks.big_space [--entities N] [--batch N] [--repeat N] [--json]

A child process creates the entities (``tx.put`` in transactions of ``--batch``); then a
fresh child opens the data directory and reads it the way an app starting up would: one
``get``, one indexed ``find``, one ``list``. Each child's peak RSS is its own. Every
result is checked against what was written, so a lost entity fails the run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from ._harness import (
    MB,
    BenchmarkError,
    ChildChannel,
    Stopwatch,
    Target,
    dir_size,
    make_console,
    median,
    peak_rss_mb,
    print_json,
    print_machine,
    print_table,
    print_targets,
    profiled,
    progress_display,
    rss_mb,
    run_child,
)

MODULE = "crdt_sync.benchmarks.big_space"
SPACE, COLLECTION = "plant", "equipment"
SITES = 100
FIND_SITE = 42
#: The issue's goals for a cold start on a space of 100,000 entities.
TARGET_OPEN_S = 2.0
TARGET_RSS_MB = 300.0


def entity_id(k: int) -> str:
    return f"eq-{k:06d}"


def entity_fields(k: int) -> dict[str, Any]:
    """A few typed fields per entity: str, int (indexed by find), str, bool."""
    return {"kind": "pump", "site": k % SITES, "serial": f"SN-{k:08d}", "ok": k % 7 != 0}


@dataclass(frozen=True, slots=True)
class Created:
    entities: int
    batch: int
    seconds: float  # wall time of the transactions and the final flush
    cpu_seconds: float  # CPU time of the same
    close_seconds: float
    peak_rss_mb: float
    disk_bytes: int  # the data directory after close()


@dataclass(frozen=True, slots=True)
class Opened:
    import_seconds: float  # import crdt_sync, in the fresh process
    open_seconds: float  # Replica(dir)
    get_seconds: float
    find_seconds: float
    found: int
    list_seconds: float
    listed: int
    rss_before_mb: float  # after imports, before opening
    peak_rss_mb: float

    @property
    def cold_seconds(self) -> float:
        """Opening plus the three reads: what an app waits for at start-up."""
        return self.open_seconds + self.get_seconds + self.find_seconds + self.list_seconds


# -- children ------------------------------------------------------------------------------
def _create(data: Path, entities: int, batch: int, tick: Callable[[int], None]) -> Created:
    from crdt_sync import Replica

    watch = Stopwatch()
    replica = Replica(data)
    space = replica.space(SPACE)
    for lo in range(0, entities, batch):
        hi = min(entities, lo + batch)
        with space.transaction() as tx:
            for k in range(lo, hi):
                tx.put(COLLECTION, entity_id(k), entity_fields(k))
        tick(hi)
    replica.seal()
    seconds, cpu_seconds = watch.read()
    closing = Stopwatch()
    replica.close()
    return Created(entities, batch, seconds, cpu_seconds, closing.read()[0], peak_rss_mb(), dir_size(data))


def _open(data: Path, entities: int) -> Opened:
    t0 = perf_counter()
    from crdt_sync import Replica

    t1 = perf_counter()
    before = rss_mb()
    t2 = perf_counter()
    replica = Replica(data)
    space = replica.space(SPACE)
    t3 = perf_counter()
    probe = entities // 2
    fields = space.get(COLLECTION, entity_id(probe))
    t4 = perf_counter()
    found = space.find(COLLECTION, site=FIND_SITE)
    t5 = perf_counter()
    listed = len(space.list(COLLECTION))
    t6 = perf_counter()
    replica.close()
    _check_reads(entities, fields, entity_fields(probe), found, listed)
    return Opened(t1 - t0, t3 - t2, t4 - t3, t5 - t4, len(found), t6 - t5, listed, before, peak_rss_mb())


def _check_reads(entities: int, got: dict[str, Any], want: dict[str, Any], found: list[str],
                 listed: int) -> None:
    expect_found = [entity_id(k) for k in range(FIND_SITE, entities, SITES)]
    if got != want or sorted(found) != expect_found or listed != entities:
        raise BenchmarkError(f"reads do not match what was written: get {got} (want {want}), "
                             f"find {len(found)} ids (want {len(expect_found)}), "
                             f"list {listed} (want {entities})")


def _child(args: argparse.Namespace) -> int:
    channel = ChildChannel()
    with profiled(args.profile / f"{args.child}.prof" if args.profile else None):
        if args.child == "create":
            result: Any = _create(args.data_dir, args.entities, args.batch, channel.progress)
        else:
            result = _open(args.data_dir, args.entities)
    channel.result(asdict(result))
    return 0


# -- parent --------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> tuple[Created, list[Opened]]:
    console = make_console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="crdt-bench-", dir=args.tmpdir) as tmp, \
            progress_display(console) as progress:
        common = ["--data-dir", str(Path(tmp) / "data"), "--entities", str(args.entities)]
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            common += ["--profile", str(args.profile)]
        created = Created(**run_child(MODULE, ["--child", "create", "--batch", str(args.batch), *common],
                                      description=f"create {args.entities:,} entities",
                                      total=args.entities, progress=progress))
        opened = [Opened(**run_child(MODULE, ["--child", "open", *common], total=1, progress=progress,
                                     description=f"cold open ({i + 1}/{args.repeat})"))
                  for i in range(args.repeat)]
    return created, opened


def _median_open(runs: Sequence[Opened]) -> Opened:
    return sorted(runs, key=lambda r: r.cold_seconds)[(len(runs) - 1) // 2]


def _create_rows(c: Created) -> list[list[str]]:
    writes = c.entities * len(entity_fields(0))
    return [
        ["entities", f"{c.entities:,} in transactions of {c.batch:,}"],
        ["create (transactions + flush)", f"{c.seconds:.2f} s wall, {c.cpu_seconds:.2f} s CPU"],
        ["entities/s", f"{c.entities / c.seconds:,.0f}"],
        ["field writes/s", f"{writes / c.seconds:,.0f}"],
        ["close()", f"{c.close_seconds:.2f} s"],
        ["creating process peak RSS", f"{c.peak_rss_mb:.0f} MB"],
        ["data directory on disk", f"{c.disk_bytes / MB:.1f} MB"],
    ]


def _open_rows(o: Opened, runs: int) -> list[list[str]]:
    return [
        ["import crdt_sync", f"{o.import_seconds * 1e3:.0f} ms"],
        ["Replica(dir)", f"{o.open_seconds * 1e3:.1f} ms"],
        ["space.get (one entity)", f"{o.get_seconds * 1e3:.1f} ms"],
        [f"space.find(site={FIND_SITE})", f"{o.find_seconds * 1e3:.1f} ms ({o.found:,} ids)"],
        ["space.list", f"{o.list_seconds * 1e3:.1f} ms ({o.listed:,} entities)"],
        ["open + get + find + list", f"{o.cold_seconds:.3f} s"],
        ["RSS after imports", f"{o.rss_before_mb:.0f} MB"],
        ["peak RSS", f"{o.peak_rss_mb:.0f} MB"],
    ] + ([["runs (median shown)", str(runs)]] if runs > 1 else [])


def _report(args: argparse.Namespace, created: Created, opened: list[Opened]) -> None:
    chosen = _median_open(opened)
    targets = [Target("cold open + get + find + list", chosen.cold_seconds, TARGET_OPEN_S, "s"),
               Target("peak RSS of the opening process", chosen.peak_rss_mb, TARGET_RSS_MB, "MB")]
    if args.json:
        print_json({"benchmark": "big_space", "create": asdict(created),
                    "open_runs": [asdict(o) | {"cold_seconds": o.cold_seconds} for o in opened],
                    "open_median_cold_seconds": median([o.cold_seconds for o in opened]),
                    "targets": [t.as_dict() for t in targets]})
        return
    console = make_console()
    print_table(console, f"big space: creating {created.entities:,} entities", ["measure", "value"],
                _create_rows(created))
    print_table(console, "big space: cold open in a fresh process", ["measure", "value"],
                _open_rows(chosen, len(opened)))
    print_machine(console)
    print_targets(console, targets)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.big_space", description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=100_000, help="entities to create")
    p.add_argument("--batch", type=int, default=1000, help="entities per transaction")
    p.add_argument("--repeat", type=int, default=1, help="cold opens; the median is reported")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="write a cProfile of each child to DIR/{create,open}.prof")
    p.add_argument("--tmpdir", type=Path, default=None, help="where the data directory goes")
    p.add_argument("--child", choices=("create", "open"), help=argparse.SUPPRESS)
    p.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.entities, args.batch, args.repeat) < 1:
        p.error("--entities, --batch and --repeat take a positive number")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    try:
        created, opened = _run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(args, created, opened)
    return 0


if __name__ == "__main__":
    sys.exit(main())
