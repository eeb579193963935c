"""Write-path benchmark: replay a real editing trace, one transaction per edit, through raw
pycrdt and through crdt-sync's full write path (journal, sealing, SQLite), side by side.

    python -m benchmarks.write_path [--trace PATH] [--limit N] [--repeat N] [--fsync] [--json]
                                    [--turns] [--baseline DIR]

Each engine runs in a child process of its own (see :mod:`benchmarks._harness`); both must
end with exactly the trace's final text. The timing covers the edits and, for crdt-sync, the
final ``flush()`` that seals them into envelopes; ``close()`` (which also compacts the
entity into a snapshot) is timed separately.

``--baseline DIR`` adds crdt-sync's write path as another build makes it: ``DIR`` is a source
tree of that build (``git archive COMMIT | tar -x -C DIR``), whose child imports its own
``crdt_sync``; with ``--turns`` both builds take turns in one run. Issue 12 compares the
encrypted, capability-checked write path with the plaintext one before it (target: at most
10 % added).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from . import _trace
from ._harness import (
    MB,
    BenchmarkError,
    Child,
    ChildChannel,
    Stopwatch,
    Target,
    chunks,
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
    run_child,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = REPO / "../shared/traces/seq-automerge-paper.json.gz"
#: The issue's goal: the full write path costs at most this much more than raw pycrdt.
TARGET_RATIO = 1.3
ENGINES = {"pycrdt": "raw pycrdt", "ours": "crdt-sync", "ours-fsync": "crdt-sync fsync=True",
           "pycrdt-coalesced": "raw pycrdt, N edits per transaction",
           "ours-coalesced": "crdt-sync, N edits per transaction",
           "ours-baseline": "crdt-sync, baseline build"}
#: issue 12: this build's write path (encryption, capability checks) / the baseline's
BASELINE_RATIO = 1.10
#: transactions per turn with ``--turns``: short enough that load changes hit both engines
#: alike, long enough (tens of ms) that switching processes costs little
TURN = 1000
MODULE = "crdt_sync.benchmarks.write_path"


@dataclass(frozen=True, slots=True)
class Run:
    """One replay by one engine, as the child measured it."""

    engine: str
    txns: int
    seconds: float  # wall time of the edits (+ the final flush for crdt-sync)
    cpu_seconds: float  # CPU time of the same
    peak_rss_mb: float  # up to the end of close(), or of the timed part if close() was cut short
    disk_bytes: int  # the data directory before close(), journal and WAL included
    close_seconds: float | None = None  # crdt-sync's close(): seal leftovers, compact, checkpoint
    disk_bytes_closed: int | None = None
    cut_short: bool = False  # _harness.CUT_SHORT: close() outlasted --close-timeout, the child was killed


# -- child: one engine, one replay ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Engine:
    """One engine, set up for a replay.

    ``run(lo, hi)`` replays transactions ``[lo, hi)``; ``seal()`` ends the timed write path
    (crdt-sync's final ``flush()``); ``text()`` reads the result back through the public API;
    ``close()`` is measured apart.
    """

    run: Callable[[int, int], None]
    text: Callable[[], str]
    seal: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None


def _groups(lo: int, hi: int, group: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` in runs of ``group`` transactions (``--coalesce``)."""
    return [(start, min(start + group, hi)) for start in range(lo, hi, group)]


def _open_pycrdt(trace: _trace.Trace, data: Path, fsync: bool, group: int = 1) -> Engine:
    from pycrdt import Doc, Text

    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    if trace.start:
        text.insert(0, trace.start)

    def run(lo: int, hi: int) -> None:
        for patches in trace.patches(lo, hi):
            with doc.transaction():
                for pos, deleted, inserted in patches:
                    if deleted:
                        del text[pos:pos + deleted]
                    if inserted:
                        text.insert(pos, inserted)

    def run_coalesced(lo: int, hi: int) -> None:
        for start, stop in _groups(lo, hi, group):
            with doc.transaction():
                for patches in trace.patches(start, stop):
                    for pos, deleted, inserted in patches:
                        if deleted:
                            del text[pos:pos + deleted]
                        if inserted:
                            text.insert(pos, inserted)
    return Engine(run if group == 1 else run_coalesced, lambda: str(text))


def _open_ours(trace: _trace.Trace, data: Path, fsync: bool, group: int = 1) -> Engine:
    from crdt_sync import Replica

    replica = Replica(data, fsync=fsync)
    space = replica.space("bench")
    if trace.start:
        with space.transaction() as tx:
            tx.entity("docs", "paper").text("body").insert(0, trace.start)

    def run(lo: int, hi: int) -> None:
        for patches in trace.patches(lo, hi):
            with space.transaction() as tx:
                body = tx.entity("docs", "paper").text("body")
                for pos, deleted, inserted in patches:
                    if deleted:
                        body.delete(pos, deleted)
                    if inserted:
                        body.insert(pos, inserted)
    def run_coalesced(lo: int, hi: int) -> None:
        # ``group`` edits in one transaction: one CRDT transaction and one journal record for
        # all of them. A lower bound on the cost of coalescing keystrokes inside the engine,
        # which would also have to journal each keystroke before it returns.
        for start, stop in _groups(lo, hi, group):
            with space.transaction() as tx:
                body = tx.entity("docs", "paper").text("body")
                for patches in trace.patches(start, stop):
                    for pos, deleted, inserted in patches:
                        if deleted:
                            body.delete(pos, deleted)
                        if inserted:
                            body.insert(pos, inserted)
    return Engine(run if group == 1 else run_coalesced,
                  lambda: str(space.get("docs", "paper").get("body", "")), replica.seal, replica.close)


def _replay(engine: Engine, txns: int, channel: ChildChannel) -> tuple[float, float]:
    """The whole replay at once; ``(wall, CPU)`` seconds."""
    watch = Stopwatch()
    for lo, hi in chunks(txns):
        engine.run(lo, hi)
        channel.progress(hi)
    engine.seal()
    return watch.read()


def _replay_in_turns(engine: Engine, channel: ChildChannel) -> tuple[float, float]:
    """The replay a chunk at a time, as the parent asks (``run LO HI`` lines on stdin, then
    ``seal``), so that two engines can take turns; ``(wall, CPU)`` seconds, summed."""
    wall = cpu = 0.0
    for line in sys.stdin:
        command = line.split()
        watch = Stopwatch()
        if command[0] == "run":
            engine.run(int(command[1]), int(command[2]))
        else:
            engine.seal()
        took = watch.read()
        wall, cpu = wall + took[0], cpu + took[1]
        channel.done()
        if command[0] == "seal":
            break
    return wall, cpu


def _child(args: argparse.Namespace) -> int:
    trace = _trace.load(args.trace_data)
    expected = args.expected.read_text(encoding="utf-8")
    channel = ChildChannel()
    data = Path(args.data_dir)
    opener = _open_pycrdt if args.child.startswith("pycrdt") else _open_ours
    engine = opener(trace, data, args.child == "ours-fsync",
                    args.coalesce if args.child.endswith("-coalesced") else 1)
    with profiled(args.profile / f"{args.child}.prof" if args.profile else None):
        seconds, cpu_seconds = _replay_in_turns(engine, channel) if args.turns \
            else _replay(engine, args.limit, channel)
    _check_text(args.child, engine.text(), expected)
    # Report before closing: close() is measured too, but the parent may cut it short.
    channel.result(asdict(Run(args.child, args.limit, seconds, cpu_seconds, peak_rss_mb(), _size(data))))
    closing = Stopwatch()
    engine.close()
    channel.result({"close_seconds": closing.read()[0], "disk_bytes_closed": _size(data),
                    "peak_rss_mb": peak_rss_mb()})
    return 0


def _size(data: Path) -> int:
    return dir_size(data) if data.exists() else 0  # raw pycrdt keeps nothing on disk


def _check_text(engine: str, text: str, expected: str) -> None:
    if text == expected:
        return
    at = next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b),
              min(len(text), len(expected)))
    raise BenchmarkError(f"{engine}: final text differs from the trace's at character {at} "
                         f"(got {len(text)} characters, expected {len(expected)}): "
                         f"{text[at:at + 40]!r} != {expected[at:at + 40]!r}")


# -- parent: run the children, report ------------------------------------------------------
def _prepare(trace_path: Path, limit: int | None, work: Path) -> tuple[Path, Path, int]:
    """Parse the trace once; write its compact form and the expected text for the children."""
    trace = _trace.load_json_trace(trace_path)
    txns = trace.txns if limit is None else min(limit, trace.txns)
    expected = trace.replay(txns)
    if txns == trace.txns and expected != trace.end:
        raise BenchmarkError(f"{trace_path}: replaying the trace as plain text does not give its endContent")
    compact, reference = work / "trace.pickle", work / "expected.txt"
    _trace.save(trace, compact)
    reference.write_text(expected, encoding="utf-8")
    return compact, reference, txns


def _run_engines(args: argparse.Namespace, console: Console) -> dict[str, list[Run]]:
    engines = ["pycrdt", "ours"] + (["ours-fsync"] if args.fsync else []) \
        + (["pycrdt-coalesced", "ours-coalesced"] if args.coalesce > 1 else [])
    if args.baseline is not None:
        engines.append("ours-baseline")
    runs: dict[str, list[Run]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory(prefix="crdt-bench-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        with console.status("parsing the trace"):
            compact, reference, txns = _prepare(args.trace, args.limit, work)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        with progress_display(console) as progress:
            for rep in range(args.repeat):
                def child_args(engine: str, rep: int = rep) -> list[str]:
                    child = "ours" if engine == "ours-baseline" else engine  # (its child knows "ours")
                    return ["--child", child, "--trace-data", str(compact), "--expected",
                            str(reference), "--limit", str(txns), "--data-dir",
                            str(work / f"{engine}-{rep}"), "--coalesce", str(args.coalesce)] \
                        + (["--profile", str(args.profile)] if args.profile else []) \
                        + (["--turns"] if args.turns else [])
                if args.turns:
                    results = _in_turns(engines, child_args, txns, progress,
                                        f"{rep + 1}/{args.repeat}", args.close_timeout, args)
                else:
                    results = {}
                    for engine in engines:  # interleaved, so drift in machine load hits all alike
                        results[engine] = run_child(
                            MODULE, child_args(engine), total=txns, progress=progress,
                            grace=args.close_timeout, source=_source(engine, args),
                            description=f"{ENGINES[engine]} ({rep + 1}/{args.repeat})")
                        shutil.rmtree(work / f"{engine}-{rep}", ignore_errors=True)
                for engine, result in results.items():
                    runs[engine].append(Run(**{**result, "engine": engine}))
                    shutil.rmtree(work / f"{engine}-{rep}", ignore_errors=True)  # don't fill the disk
    return runs


def _in_turns(engines: list[str], child_args: Callable[[str], list[str]], txns: int,
              progress: Progress, which: str, grace: float,
              args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One run of every engine at once, each in its own process, taking turns a chunk of
    :data:`TURN` transactions at a time (the order alternating): a change in the machine's
    load within a run then hits every engine alike."""
    children = {e: Child(MODULE, child_args(e), f"{ENGINES[e]} ({which})", _source(e, args))
                for e in engines}
    task = progress.add_task(f"{', '.join(ENGINES[e] for e in engines)} in turns ({which})", total=txns)
    try:
        for k, (lo, hi) in enumerate(chunks(txns, parts=max(1, -(-txns // TURN)))):
            for engine in engines if k % 2 == 0 else engines[::-1]:
                children[engine].step(f"run {lo} {hi}")
            progress.update(task, completed=hi)
        for engine in engines:
            children[engine].step("seal")
        return {e: child.finish(grace=grace) for e, child in children.items()}
    finally:
        progress.remove_task(task)


def _source(engine: str, args: argparse.Namespace) -> Path | None:
    """The source tree an engine's child imports crdt_sync from (None: this one)."""
    return args.baseline if engine == "ours-baseline" else None


@dataclass(frozen=True, slots=True)
class Summary:
    """An engine's runs in one row: medians of the times, the worst peak RSS."""

    engine: str
    txns: int
    seconds: float
    best_seconds: float
    cpu_seconds: float
    close_seconds: float | None  # None: some close() was cut short
    peak_rss_mb: float
    disk_bytes: int  # after close(), or before it when close() was cut short

    @classmethod
    def of(cls, runs: Sequence[Run]) -> Summary:
        last = runs[-1]
        closes = [r.close_seconds for r in runs if r.close_seconds is not None]
        close = median(closes) if len(closes) == len(runs) else None
        disk = last.disk_bytes if last.disk_bytes_closed is None else last.disk_bytes_closed
        return cls(last.engine, last.txns, median([r.seconds for r in runs]), min(r.seconds for r in runs),
                   median([r.cpu_seconds for r in runs]), close, max(r.peak_rss_mb for r in runs), disk)


HEADERS = ["engine", "edits", "wall s", "best s", "CPU s", "edits/s", "µs/edit", "wall vs pycrdt",
           "CPU vs pycrdt", "peak RSS MB", "disk MB", "close s"]


def _row(s: Summary, base: Summary, close_timeout: float, coalesce: int) -> list[str]:
    ours = not s.engine.startswith("pycrdt")
    closed = s.close_seconds is not None
    return [ENGINES[s.engine].replace("N edits", f"{coalesce} edits"), f"{s.txns:,}", f"{s.seconds:.2f}",
            f"{s.best_seconds:.2f}",
            f"{s.cpu_seconds:.2f}", f"{s.txns / s.seconds:,.0f}", f"{s.seconds / s.txns * 1e6:.1f}",
            f"{s.seconds / base.seconds:.2f}x", f"{s.cpu_seconds / base.cpu_seconds:.2f}x",
            f"{s.peak_rss_mb:.0f}" + ("" if closed else "*"),
            (f"{s.disk_bytes / MB:.1f}" + ("" if closed else "*")) if ours else "-",
            (f"{s.close_seconds:.2f}" if s.close_seconds is not None else f"> {close_timeout:g}*")
            if ours else "-"]


def _report(args: argparse.Namespace, runs: dict[str, list[Run]]) -> None:
    rows = {e: Summary.of(r) for e, r in runs.items()}
    ours, base = rows["ours"], rows["pycrdt"]
    targets = [Target("crdt-sync / raw pycrdt, wall time", ours.seconds / base.seconds, TARGET_RATIO, "x"),
               Target("crdt-sync / raw pycrdt, CPU time", ours.cpu_seconds / base.cpu_seconds,
                      TARGET_RATIO, "x")]
    if "ours-coalesced" in rows:  # the bar for keeping coalescing: within 1.0x
        coalesced = rows["ours-coalesced"]
        targets += [Target(f"crdt-sync {args.coalesce} edits per transaction / raw pycrdt one per edit, "
                           "wall", coalesced.seconds / base.seconds, 1.0, "x"),
                    Target(f"crdt-sync {args.coalesce} edits per transaction / raw pycrdt {args.coalesce} "
                           "per transaction, wall", coalesced.seconds / rows["pycrdt-coalesced"].seconds,
                           TARGET_RATIO, "x")]
    if "ours-baseline" in rows:
        old = rows["ours-baseline"]
        targets += [Target("crdt-sync / baseline build, wall time", ours.seconds / old.seconds,
                           BASELINE_RATIO, "x"),
                    Target("crdt-sync / baseline build, CPU time", ours.cpu_seconds / old.cpu_seconds,
                           BASELINE_RATIO, "x")]
    if args.json:
        print_json({"benchmark": "write_path", "baseline": str(args.baseline) if args.baseline else None,
                    "trace": str(args.trace), "repeat": args.repeat,
                    "turns": TURN if args.turns else None,
                    "runs": {e: [asdict(r) for r in rs] for e, rs in runs.items()},
                    "summary": {e: asdict(s) for e, s in rows.items()},
                    "targets": [t.as_dict() for t in targets]})
        return
    console = make_console()
    title = (f"write path: {args.trace.name}, one transaction per edit; times are medians of "
             f"{args.repeat} run(s)" + (f", engines taking turns {TURN:,} transactions at a time"
                                         if args.turns else ""))
    print_table(console, title, HEADERS, [_row(s, base, args.close_timeout, args.coalesce)
                                                for s in rows.values()])
    if any(s.close_seconds is None for s in rows.values()):
        console.print(f"* close() still running after {args.close_timeout:g} s: the child was stopped; "
                      "peak RSS and disk are as of before close()")
    print_machine(console)
    print_targets(console, targets)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.write_path", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="editing trace (.json.gz)")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N transactions")
    p.add_argument("--repeat", type=int, default=1, help="runs per engine; the median is reported")
    p.add_argument("--turns", action="store_true",
                   help=f"run the engines at once, each in its own process, taking turns "
                        f"{TURN:,} transactions at a time (steadier on a shared machine)")
    p.add_argument("--fsync", action="store_true", help="add a run of crdt-sync with fsync=True")
    p.add_argument("--coalesce", type=int, default=1, metavar="N",
                   help="add raw pycrdt and crdt-sync with N consecutive edits per transaction")
    p.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                   help="also run crdt-sync's write path from the source tree DIR of another build "
                        "(e.g. `git archive main | tar -x -C DIR`), side by side")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="cProfile each engine's run (the last one) into DIR/<engine>.prof")
    p.add_argument("--tmpdir", type=Path, default=None, help="where data directories go")
    p.add_argument("--close-timeout", type=float, default=120.0, metavar="S",
                   help="stop waiting for crdt-sync's close() after S seconds (default 120)")
    # the child's side: set by the parent only
    for hidden in ("--child", "--trace-data", "--expected", "--data-dir"):
        p.add_argument(hidden, help=argparse.SUPPRESS, type=Path if hidden != "--child" else str)
    args = p.parse_args(argv)
    if args.repeat < 1 or (args.limit is not None and args.limit < 1):
        p.error("--repeat and --limit take a positive number")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    args.trace = args.trace.resolve()
    if args.baseline is not None:
        args.baseline = args.baseline.resolve()
        if not (args.baseline / "crdt_sync" / "benchmarks" / "write_path.py").is_file():
            print(f"error: --baseline {args.baseline} is not a source tree of crdt-sync with this "
                  "benchmark (crdt_sync/benchmarks/write_path.py)", file=sys.stderr)
            return 1
    if not args.trace.is_file():
        print(f"error: trace {args.trace} not found; pass --trace PATH "
              f"(the traces live in ../shared/traces next to the repository)", file=sys.stderr)
        return 1
    try:
        runs = _run_engines(args, make_console(stderr=True))
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _report(args, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
