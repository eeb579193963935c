"""Sync protocol benchmark: crdt-sync sessions against Yjs state-vector sync, side by side.

    python -m benchmarks.sync [--entities N] [--changes N] [--prefix N] [--behind 1,100,1000]
                              [--quick] [--only space|trace] [--json]

A. A space of ``--entities`` small entities on two devices (B got it from A in one full
   sync), then ``--changes`` entities changed on A; A and B sync. Two ways of changing: one
   transaction and one sealed envelope per change (edits spread over time), and all changes in
   one transaction. Against it: per-document Yjs sync of the same entity documents, as a Yjs
   server does it (a state vector for every document).
B. Catch-up on the automerge-paper document: B is k edits behind A. Against it: y-protocols'
   state-vector sync of a pycrdt document with the same content.

Our sessions are two in-process :class:`~crdt_sync.protocol.Session` objects whose frames are
delivered in *flights*: every frame produced in answer to the previous flight forms the next
one, so a flight is one one-way trip and ``round trips = flights / 2``. Each phase runs in a
child process of its own (see :mod:`benchmarks._harness`); data directories pass between them.
Its tables and targets are in :mod:`benchmarks._sync_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from . import _trace
from ._flights import SyncRun, YSync, drive, same_state
from ._harness import (
    BenchmarkError,
    ChildChannel,
    chunks,
    dir_size,
    make_console,
    peak_rss_mb,
    profiled,
    progress_display,
    run_child,
    share,
)
from ._sync_report import VARIANTS, report

if TYPE_CHECKING:  # the children import these lazily: the parent needs neither
    from pycrdt import Doc, Text

    from crdt_sync import Replica, Space

MODULE = "crdt_sync.benchmarks.sync"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = REPO / "../shared/traces/seq-automerge-paper.json.gz"
SPACE, COLLECTION, SITES = "plant", "equipment", 100
DOC_SPACE, DOC_COLL, DOC_ID, DOC_FIELD = "bench", "docs", "paper", "body"


# -- A: a big space ------------------------------------------------------------------------
def entity_id(k: int) -> str:
    return f"eq-{k:06d}"


def entity_fields(k: int) -> dict[str, Any]:
    """The same shape as :mod:`benchmarks.big_space`: a few typed fields."""
    return {"kind": "pump", "site": k % SITES, "serial": f"SN-{k:08d}", "ok": k % 7 != 0}


def change(k: int) -> dict[str, Any]:
    """One field changed: a technician flips the status."""
    return {"ok": k % 7 == 0}


def changed_keys(entities: int, changes: int) -> list[int]:
    return [i * entities // changes for i in range(changes)]


def _space_create(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    from crdt_sync import Replica

    with Replica(args.work / "b") as b, Replica(args.work / "a") as a:
        share(a, b, name=SPACE)  # B is let in (grant, keys) before A writes: its first sync brings the rest
    t0 = perf_counter()
    with Replica(args.work / "a") as a:
        space = a.space(SPACE)
        for lo in range(0, args.entities, 1000):  # transactions of 1,000, as big_space
            hi = min(args.entities, lo + 1000)
            with space.transaction() as tx:
                for k in range(lo, hi):
                    tx.put(COLLECTION, entity_id(k), entity_fields(k))
            channel.progress(hi)
        a.seal()
    return {"seconds": perf_counter() - t0, "disk_bytes": dir_size(args.work / "a")}


def _seed(a: Replica, b: Replica, space: str, channel: ChildChannel) -> SyncRun:
    """B's first, full sync from A (setup, reported for reference). Progress in percent.
    B already holds the space's set-up (A's grant, by :func:`~benchmarks._harness.share`)."""
    top = sum(a.version_vector(space).values())
    return drive(a.sync_host, b.sync_host,
                 lambda: channel.progress(100 * sum(b.version_vector(space).values()) // top))


def _space_seed(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    from crdt_sync import Replica

    with Replica(args.work / "a") as a, Replica(args.work / "b") as b:
        run = _seed(a, b, SPACE, channel)
        base = a.version_vector(SPACE)
    return {"seed": run.as_dict(), "base": base}


def _space_sync(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """Per variant: copies of A and B, the changes on A, one measured session, a check of B."""
    from crdt_sync import Replica

    keys = changed_keys(args.entities, args.changes)
    out: dict[str, Any] = {}
    for step, variant in enumerate(VARIANTS):
        a_dir, b_dir = args.work / f"a-{variant}", args.work / f"b-{variant}"
        # Copies of A share its device key, which is harmless here: they never meet.
        shutil.copytree(args.work / "a", a_dir)
        shutil.copytree(args.work / "b", b_dir)
        with Replica(a_dir) as a, Replica(b_dir) as b:
            _make_changes(a, keys, together=variant == "together")
            run = drive(a.sync_host, b.sync_host)
            _check_space(b, keys, a.version_vector(SPACE))
        out[variant] = run.as_dict()
        channel.progress(step + 1)
    out["plain_yjs_bytes"] = _plain_yjs_change_bytes(keys)
    return out


def _make_changes(a: Replica, keys: list[int], together: bool) -> None:
    space = a.space(SPACE)
    if together:
        with space.transaction() as tx:
            for k in keys:
                tx.put(COLLECTION, entity_id(k), change(k))
    else:
        for k in keys:
            with space.transaction() as tx:
                tx.put(COLLECTION, entity_id(k), change(k))
            a.seal()  # as if made seal intervals apart: each in an envelope of its own
    a.seal()


def _check_space(b: Replica, keys: list[int], vv: dict[str, int]) -> None:
    space = b.space(SPACE)
    for k in keys:
        got = space.get(COLLECTION, entity_id(k))
        if got != entity_fields(k) | change(k):
            raise BenchmarkError(f"B's {entity_id(k)} after sync: {got}")
    if b.version_vector(SPACE) != vv:
        raise BenchmarkError(f"B's version vector {b.version_vector(SPACE)} != A's {vv}")


def _plain_yjs_change_bytes(keys: list[int]) -> int:
    """The changes as a plain Yjs app would write them (one Y.Map per entity): the leanest
    Yjs encoding of the same edits, for reference. Ours carries HLC and author per value."""
    from pycrdt import Doc, Map

    total = 0
    for k in keys:
        doc: Doc[Any] = Doc()
        fields = doc.get("fields", type=Map)
        with doc.transaction():
            fields.update(entity_fields(k))
        before = doc.get_state()
        with doc.transaction():
            fields.update(change(k))
        total += len(doc.get_update(before))
    return total


def _space_yjs(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """y-protocols per entity document, B (before the changes) against A (after them).

    The documents are our entities' own Yjs documents, rebuilt from A's envelopes: the same
    content a Yjs server would hold. Building them is not timed; a server keeps them loaded.
    """
    from pycrdt import Doc

    base, changed = _entity_updates(args.work / "a-each", args.base_seq)
    tally = YSync()
    names = sorted(base)
    for lo, hi in chunks(len(names)):
        for name in names[lo:hi]:
            doc_b: Doc[Any] = Doc()
            doc_a: Doc[Any] = Doc()
            for update in base[name]:
                doc_b.apply_update(update)
                doc_a.apply_update(update)
            for update in changed.get(name, ()):
                doc_a.apply_update(update)
            tally.exchange(doc_a, doc_b, name)
            if name in changed and not same_state(doc_a, doc_b):
                raise BenchmarkError(f"Yjs sync of {name} did not bring B up to A")
        channel.progress(hi)
    raw = sum(len(u) for updates in changed.values() for u in updates)
    return {"yjs": tally.as_dict(), "changed_docs": len(changed), "raw_change_bytes": raw,
            "peak_rss_mb": peak_rss_mb()}


def _entity_updates(data: Path, base_seq: int) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
    """Each entity's Yjs updates from A's envelopes: up to ``base_seq`` (what B had), and after.

    The payloads are decrypted with A's keys (a Yjs server would hold the plaintext); the
    space's membership envelopes and its label carry no entity of the workload and are left out.
    """
    from crdt_sync import Replica
    from crdt_sync.bundle import decode_bundle
    from crdt_sync.envelope import decode_trusted
    from crdt_sync.members import decode_data
    from crdt_sync.space_crypto import DATA_PAYLOAD, payload_kind

    with Replica(data) as a:
        bundle = decode_bundle(a.export_bundle(SPACE))
        keys = a.secrets.keyring().keys_of(bundle.space)
    base: dict[str, list[bytes]] = {}
    changed: dict[str, list[bytes]] = {}
    for wire in bundle.envelopes:
        env = decode_trusted(wire)
        if payload_kind(env.payload) != DATA_PAYLOAD:
            continue  # membership (genesis and keys, the grant)
        into = base if env.seq <= base_seq else changed
        for coll, ent, _blob, items in decode_data(env, keys):
            if coll == COLLECTION:  # not the space's label
                into.setdefault(f"{coll}/{ent}", []).extend(update for _, update in items)
    return base, changed


# -- B: catch-up on an editing trace -------------------------------------------------------
def _replay(space: Space, trace: _trace.Trace, lo: int, hi: int, tick: Callable[[int], None]) -> None:
    """Edits ``lo`` to ``hi`` of the trace, one transaction each, through our engine."""
    for a, b in chunks(hi - lo, 20):
        for patches in trace.patches(lo + a, lo + b):
            with space.transaction() as tx:
                body = tx.entity(DOC_COLL, DOC_ID).text(DOC_FIELD)
                for pos, deleted, inserted in patches:
                    if deleted:
                        body.delete(pos, deleted)
                    if inserted:
                        body.insert(pos, inserted)
        tick(lo + b)


def _trace_replay(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """A replays the trace up to the point the furthest-behind B stops at."""
    from crdt_sync import Replica

    trace = _trace.load(args.trace_data)
    upto = args.prefix - max(args.behind)
    with Replica(args.work / "doc-b") as b, Replica(args.work / "doc-a") as a:
        share(a, b, name=DOC_SPACE)  # B is let in before A writes: its first sync brings the rest
    t0 = perf_counter()
    with Replica(args.work / "doc-a") as a:
        space = a.space(DOC_SPACE)
        if trace.start:
            with space.transaction() as tx:
                tx.entity(DOC_COLL, DOC_ID).text(DOC_FIELD).insert(0, trace.start)
        _replay(space, trace, 0, upto, channel.progress)
        a.seal()
    return {"edits": upto, "seconds": perf_counter() - t0}


def _trace_seed(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """B syncs fully once; then, for each k (largest first), A replays up to N - k, B catches
    up and a copy of B's closed data directory is kept as "k edits behind"."""
    from crdt_sync import Replica

    trace = _trace.load(args.trace_data)
    a_dir, b_dir = args.work / "doc-a", args.work / "doc-b"
    a = Replica(a_dir)
    b = Replica(b_dir)
    seed = _seed(a, b, DOC_SPACE, channel)
    done = args.prefix - max(args.behind)
    for k in sorted(args.behind, reverse=True):
        _replay(a.space(DOC_SPACE), trace, done, args.prefix - k, lambda _: None)
        done = args.prefix - k
        a.seal()  # so what follows (the single last edit, for k = 1) is sealed on its own
        drive(a.sync_host, b.sync_host)
        b.close()
        shutil.copytree(b_dir, args.work / f"doc-b-{k}")
        b = Replica(b_dir)
    _replay(a.space(DOC_SPACE), trace, done, args.prefix, lambda _: None)
    a.close()  # seals the last edits
    b.close()
    return {"seed": seed.as_dict(), "disk_bytes": dir_size(a_dir)}


def _trace_sync(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """Per k: B (a fresh copy of its "k behind" directory) syncs with A, once with the
    document not loaded (B just started) and once with it open in B's app (loaded, untimed)."""
    from crdt_sync import Replica

    expected = args.expected.read_text(encoding="utf-8")
    out: dict[str, Any] = {}
    with Replica(args.work / "doc-a") as a:
        for i, (k, warm) in enumerate((k, warm) for k in args.behind for warm in (False, True)):
            run_dir = args.work / "doc-b-run"
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(args.work / f"doc-b-{k}", run_dir)
            with Replica(run_dir) as b:
                doc = b.space(DOC_SPACE)
                if warm:
                    doc.get(DOC_COLL, DOC_ID)
                run = drive(a.sync_host, b.sync_host)
                if doc.get(DOC_COLL, DOC_ID).get(DOC_FIELD) != expected:
                    raise BenchmarkError(f"B's text after catching up {k} edits differs from the trace's")
            out[f"{k}-{'warm' if warm else 'cold'}"] = run.as_dict()
            channel.progress(i + 1)
    return out


def _trace_yjs(args: argparse.Namespace, channel: ChildChannel) -> dict[str, Any]:
    """Raw pycrdt replays the trace (one transaction per edit), keeping the document as it
    was k edits before the end; then y-protocols brings each such B up to A."""
    from pycrdt import Doc, Text

    trace = _trace.load(args.trace_data)
    expected = args.expected.read_text(encoding="utf-8")
    doc_a: Doc[Any] = Doc()
    text = doc_a.get(DOC_FIELD, type=Text)
    if trace.start:
        text.insert(0, trace.start)
    states: dict[int, bytes] = {}
    done = 0
    for k in sorted(args.behind, reverse=True):
        _replay_pycrdt(doc_a, text, trace, done, args.prefix - k, channel.progress)
        done = args.prefix - k
        states[k] = doc_a.get_update()
    _replay_pycrdt(doc_a, text, trace, done, args.prefix, channel.progress)
    out: dict[str, Any] = {}
    for k in args.behind:
        doc_b: Doc[Any] = Doc()
        doc_b.apply_update(states[k])
        tally = YSync()
        tally.exchange(doc_a, doc_b)
        if str(doc_b.get(DOC_FIELD, type=Text)) != expected:
            raise BenchmarkError(f"y-protocols sync of {k} edits did not give the trace's text")
        out[str(k)] = tally.as_dict()
    return out


def _replay_pycrdt(doc: Doc[Any], text: Text, trace: _trace.Trace, lo: int, hi: int,
                   tick: Callable[[int], None]) -> None:
    for a, b in chunks(hi - lo, 20):
        for patches in trace.patches(lo + a, lo + b):
            with doc.transaction():
                for pos, deleted, inserted in patches:
                    if deleted:
                        del text[pos:pos + deleted]
                    if inserted:
                        text.insert(pos, inserted)
        tick(lo + b)


CHILDREN: dict[str, Callable[[argparse.Namespace, ChildChannel], dict[str, Any]]] = {
    "space-create": _space_create, "space-seed": _space_seed, "space-sync": _space_sync,
    "space-yjs": _space_yjs, "trace-replay": _trace_replay, "trace-seed": _trace_seed,
    "trace-sync": _trace_sync, "trace-yjs": _trace_yjs,
}


def _child(args: argparse.Namespace) -> int:
    channel = ChildChannel()
    with profiled(args.profile / f"{args.child}.prof" if args.profile else None):
        result = CHILDREN[args.child](args, channel)
    channel.result(result)
    return 0


# -- parent --------------------------------------------------------------------------------
@dataclass
class Runner:
    """Runs the children of one benchmark run in one work directory."""

    args: argparse.Namespace
    work: Path
    progress: Progress
    results: dict[str, Any] = field(default_factory=dict)

    def child(self, name: str, description: str, total: int, *extra: str) -> dict[str, Any]:
        a = self.args
        argv = ["--child", name, "--work", str(self.work), "--entities", str(a.entities),
                "--changes", str(a.changes), "--behind", ",".join(map(str, a.behind)), *extra]
        if a.profile:
            argv += ["--profile", str(a.profile)]
        return run_child(MODULE, argv, description=description, total=total, progress=self.progress)

    def space(self) -> dict[str, Any]:
        n = self.args.entities
        out = {"entities": n, "changes": self.args.changes,
               "create": self.child("space-create", f"A: create {n:,} entities", n)}
        out |= self.child("space-seed", "B: first full sync from A (%)", 100)
        out["sync"] = self.child("space-sync", f"sync {self.args.changes} changes", len(VARIANTS))
        base_seq = str(sum(out["base"].values()))
        out |= self.child("space-yjs", f"Yjs: sync {n:,} documents", n, "--base-seq", base_seq)
        return out

    def trace(self) -> dict[str, Any]:
        a = self.args
        with self.progress.console.status("parsing the trace"):
            data, expected, a.prefix = _prepare_trace(a.trace, a.prefix, self.work)
        if max(a.behind) >= a.prefix:
            raise BenchmarkError(f"--behind {max(a.behind)} needs a --prefix longer than that")
        files = ["--trace-data", str(data), "--expected", str(expected), "--prefix", str(a.prefix)]
        upto = a.prefix - max(a.behind)
        out = {"edits": a.prefix, "behind": a.behind,
               "replay": self.child("trace-replay", f"A: replay {upto:,} edits", upto, *files)}
        out |= self.child("trace-seed", "B: first full sync, then k behind (%)", 100, *files)
        out["sync"] = self.child("trace-sync", "catch-up sessions", 2 * len(a.behind), *files)
        out["yjs"] = self.child("trace-yjs", f"pycrdt: replay {a.prefix:,} edits", a.prefix, *files)
        return out


def _prepare_trace(path: Path, prefix: int | None, work: Path) -> tuple[Path, Path, int]:
    """Parse the trace once; the children get its compact form and the expected final text."""
    trace = _trace.load_json_trace(path)
    edits = trace.txns if prefix is None else min(prefix, trace.txns)
    data, expected = work / "trace.pickle", work / "expected.txt"
    _trace.save(trace, data)
    expected.write_text(trace.end if edits == trace.txns else trace.replay(edits), encoding="utf-8")
    return data, expected, edits


def _run(args: argparse.Namespace) -> dict[str, Any]:
    console = make_console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="crdt-bench-", dir=args.tmpdir) as tmp, \
            progress_display(console) as progress:
        runner = Runner(args, Path(tmp), progress)
        # Times mean little on a busy machine: record how busy it was.
        runner.results["load_average"] = {"start": os.getloadavg()}
        if args.only in (None, "space"):
            runner.results["space"] = runner.space()
        if args.only in (None, "trace"):
            runner.results["trace"] = runner.trace()
        runner.results["load_average"]["end"] = os.getloadavg()
    return runner.results


# -- command line --------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sync", description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=None, help="entities in the space (default 100000)")
    p.add_argument("--changes", type=int, default=100, help="entities changed on A")
    p.add_argument("--prefix", type=int, default=None, help="replay only the first N edits of the trace")
    p.add_argument("--behind", type=_ints, default=[1, 100, 1000], help="k edits behind (default 1,100,1000)")
    p.add_argument("--quick", action="store_true",
                   help="a small run: 2,000 entities and the first 20,000 edits (unless given)")
    p.add_argument("--only", choices=("space", "trace"), default=None, help="run only part A or B")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="editing trace (.json.gz)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--load", type=Path, default=None, metavar="FILE",
                   help="show the tables of a run saved with --json instead of running")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="write a cProfile of each child to DIR/<phase>.prof")
    p.add_argument("--tmpdir", type=Path, default=None, help="where data directories go")
    for hidden, kind in (("--child", str), ("--work", Path), ("--trace-data", Path), ("--expected", Path),
                         ("--base-seq", int)):
        p.add_argument(hidden, type=kind, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.entities is None:
        args.entities = 2_000 if args.quick else 100_000
    if args.prefix is None and args.quick:
        args.prefix = 20_000
    if args.child is not None and args.child not in CHILDREN:
        p.error(f"unknown child {args.child}")
    if min(args.entities, args.changes, *(args.behind or [0])) < 1 or args.changes > args.entities:
        p.error("--entities, --changes and --behind take positive numbers, and changes <= entities")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    if args.load:  # results as --json printed them
        saved = json.loads(args.load.read_text(encoding="utf-8"))
        report(args, {part: saved[part] for part in ("space", "trace", "load_average") if part in saved})
        return 0
    args.trace = args.trace.resolve()
    if args.only != "space" and not args.trace.is_file():
        print(f"error: trace {args.trace} not found; pass --trace PATH", file=sys.stderr)
        return 1
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        results = _run(args)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
