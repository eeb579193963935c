"""The merge benchmark: CRDT engines compared on the same workloads, in one run.

    crdt-sync bench merge [--trace FILE ...] [--engines a,b] [--out DIR] [--quick] [--setup]
    python -m benchmarks.merge ...   (the same)

Every engine runs every workload in a child process of its own (``benchmarks.merge.worker``;
Node engines replace that process with ``node``), reports its figures, and writes the final
content, which is checked here: a run whose result is wrong counts as failed. Writes
``results.json``, ``report.md`` and PNG plots to ``--out`` and prints the tables.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from .._harness import BenchmarkError, machine_info, make_console, progress_display, run_child
from . import nodejs, report
from .engines import ENGINES, EngineInfo, unavailable
from .workloads import Workload, prepare_field, prepare_trace

MODULE = "crdt_sync.benchmarks.merge.worker"
REPO = nodejs.REPO
SHARED_TRACES = REPO.parent / "shared" / "traces"
#: sizes (comma lists), then counts; --quick trades them for a first look in a minute or two
DEFAULTS = {"behind": "1,100,1000,10000", "field_sizes": "100,400,1600"}
QUICK = {"behind": "1,10,100", "field_sizes": "50,200"}
DEFAULT_COUNTS = {"devices": 5, "rounds": 3}
QUICK_COUNTS = {"devices": 4, "rounds": 2, "limit": 5000}


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("sizes must not be negative")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crdt-sync bench merge", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, action="append", default=[], metavar="FILE",
                   help="editing trace (.json.gz, josephg/editing-traces format); repeatable")
    p.add_argument("--shared-traces", action="store_true",
                   help=f"add every trace in {SHARED_TRACES} (if the folder exists)")
    p.add_argument("--engines", default=",".join(ENGINES),
                   help=f"comma-separated, from {', '.join(ENGINES)} (default: all)")
    p.add_argument("--behind", type=_ints, default=None,
                   help=f"catch-up sizes k, edits behind (default {DEFAULTS['behind']})")
    p.add_argument("--field-sizes", type=_ints, default=None, metavar="N,N",
                   help=f"assets in each field-team workload (default {DEFAULTS['field_sizes']}; "
                        "0 for none); each device makes N/4 edits per round")
    p.add_argument("--devices", type=int, default=None,
                   help=f"field-team devices (default {DEFAULT_COUNTS['devices']})")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"offline rounds (default {DEFAULT_COUNTS['rounds']})")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated workload")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N transactions of a "
                   "sequential trace")
    p.add_argument("--quick", action="store_true",
                   help="small sizes for a first look (explicit options still win)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="where results go (default bench-out)")
    p.add_argument("--setup", action="store_true", help="install the Node engines (npm) and exit")
    p.add_argument("--no-setup", action="store_true",
                   help="never run npm: Node engines not installed yet are reported as such")
    p.add_argument("--node-dir", type=Path, default=nodejs.DEFAULT_DIR, help="where npm installs the "
                   f"Node engines (default {nodejs.DEFAULT_DIR})")
    p.add_argument("--tmpdir", type=Path, default=None, help="where workloads and data directories go")
    return p


def _settle_args(args: argparse.Namespace) -> None:
    """Fill what was not given from --quick or the defaults."""
    sizes, counts = (QUICK, QUICK_COUNTS) if args.quick else (DEFAULTS, DEFAULT_COUNTS)
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, _ints(value))
    for key, count in counts.items():
        if getattr(args, key) is None:
            setattr(args, key, count)
    if args.shared_traces and SHARED_TRACES.is_dir():
        args.trace += sorted(SHARED_TRACES.glob("*.json.gz"))


def _engines(spec: str) -> list[EngineInfo]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise BenchmarkError(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    return [ENGINES[n] for n in names]


def _node_setup(args: argparse.Namespace, engines: list[EngineInfo], console: Console) -> str | None:
    """Install the Node engines when asked, or on first use unless --no-setup."""
    wanted = [e for e in engines if e.runtime == "node"]
    if not wanted or nodejs.node_binary() is None:
        return None
    if all(nodejs.installed(args.node_dir, e.requires) for e in wanted) and not args.setup:
        return None
    if args.no_setup:
        return None
    with console.status(f"installing the Node engines into {args.node_dir} (npm)"):
        return nodejs.setup(args.node_dir)


# -- running -------------------------------------------------------------------------------
def _run_one(args: argparse.Namespace, w: Workload, info: EngineInfo, work: Path,
             progress: Progress) -> dict[str, Any]:
    if w.kind == "concurrent" and info.unit != "cp" and not w.ascii:
        return {"status": "skipped", "reason": f"counts {info.unit}: the replay converts positions "
                                               "of sequential traces only, and this one is not ASCII"}
    engine_work = work / f"{w.name}-{info.name}"
    content = work / f"{w.name}-{info.name}.out"
    argv = ["--engine", info.name, "--workload", str(w.folder), "--work", str(engine_work),
            "--content", str(content), "--behind", ",".join(map(str, args.behind)),
            "--node-dir", str(args.node_dir)]
    t0 = time.monotonic()
    try:
        result = run_child(MODULE, argv, description=f"{w.name}: {info.label}", total=w.txns,
                           progress=progress)
    except BenchmarkError as exc:
        return {"status": "failed", "reason": str(exc).strip()[-3000:]}
    finally:
        shutil.rmtree(engine_work, ignore_errors=True)
    wrong = w.check(content)
    content.unlink(missing_ok=True)
    if wrong is not None:
        return {"status": "wrong", "reason": wrong, **result}
    return {"status": "ok", "wall_s": time.monotonic() - t0, **result}


def _run(args: argparse.Namespace, engines: list[EngineInfo], status: dict[str, str | None],
         console: Console) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crdt-bench-merge-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        workloads: list[Workload] = []
        with console.status("preparing the workloads"):
            for path in args.trace:
                workloads.append(prepare_trace(path.resolve(), work, args.limit))
            for size in (s for s in args.field_sizes if s > 0):
                workloads.append(prepare_field(work, args.devices, size, args.rounds, max(10, size // 4),
                                               args.seed))
        with progress_display(console) as progress:
            for w in workloads:
                runs: dict[str, Any] = {}
                for info in engines:  # one engine after the other, never side by side
                    reason = status[info.name]
                    runs[info.name] = {"status": "not installed", "reason": reason} if reason \
                        else _run_one(args, w, info, work, progress)
                    if runs[info.name]["status"] in ("failed", "wrong"):
                        console.print(f"[red]{w.name}: {info.name} {runs[info.name]['status']}:[/red] "
                                      f"{escape(report.error_line(runs[info.name]['reason']))}")
                out.append({"name": w.name, "kind": w.kind, "txns": w.txns, **w.info, "runs": runs})
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _settle_args(args)
    console = make_console(stderr=True)
    try:
        engines = _engines(args.engines)
        setup_error = _node_setup(args, engines, console)
        if args.setup:
            if setup_error:
                console.print(f"[red]setup failed:[/red] {setup_error}")
            return 1 if setup_error else 0
        status = {e.name: unavailable(e, args.node_dir) for e in engines}
        if setup_error:
            status |= {e.name: f"not installed ({setup_error})" for e in engines if e.runtime == "node"}
        started = time.time()
        workloads = _run(args, engines, status, console)
    except BenchmarkError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    command = " ".join(["crdt-sync bench merge", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    results = {"benchmark": "merge", "command": command,
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
               "seconds": time.time() - started, "machine": machine_info(),
               "engines": {e.name: {"label": e.label, "runtime": e.runtime,
                                    "status": "ok" if status[e.name] is None else status[e.name]}
                           for e in engines},
               "behind": args.behind, "workloads": workloads}
    report.write_all(results, args.out, make_console())
    bad = [f"{w['name']}/{e}" for w in workloads for e, r in w["runs"].items()
           if r["status"] in ("failed", "wrong")]
    if bad:
        console.print(f"[red]failed or wrong:[/red] {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
