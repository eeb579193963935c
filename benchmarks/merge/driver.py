"""The three workloads, written once against :mod:`.engines.base` and run in a child process.

Each function returns the figures (a JSON-able dict) and the final content, which the
parent checks against what the workload must end on. Timed parts are only the engine's
work: checks and progress reports happen outside the clock.
``benchmarks/merge/node/driver.cjs`` is the same code for the Node engines; keep them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from time import perf_counter
from typing import Any

from .._harness import BenchmarkError, chunks, peak_rss_mb, rss_mb
from .._trace import Patch, Trace
from . import _flat, concurrent, field
from .engines.base import Doc, Engine, Update

Tick = Callable[[int], None]


def _check(what: str, got: str, expected: str) -> None:
    if got != expected:
        at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                  min(len(got), len(expected)))
        raise BenchmarkError(f"{what}: text differs from the expected at character {at} "
                             f"(got {len(got)} characters, expected {len(expected)}): "
                             f"{got[at:at + 30]!r} != {expected[at:at + 30]!r}")


def _figures(engine: Engine, kind: str, txns: int, base_rss: float) -> dict[str, Any]:
    return {"engine": engine.name, "version": engine.version(), "kind": kind, "txns": txns,
            "rss_base_mb": base_rss, "catchup": {}}


def _state_and_load(engine: Engine, doc: Doc, out: dict[str, Any],
                    read: Callable[[Doc], Any], expected: Any) -> None:
    """Encode ``doc``, then reopen it from that and read it back, checked.

    Other replicas are left open: the child exits when it is done, and closing is no part of
    the comparison (crdt-sync's close before reopening is reported as ``close_s``).
    """
    t0 = perf_counter()
    state = doc.encode()
    out["encode_s"] = perf_counter() - t0
    out["state_bytes"] = len(state)
    prepared = engine.before_load(doc)
    t0 = perf_counter()
    loaded = engine.load(doc, state)
    got = read(loaded)
    out["load_s"] = perf_counter() - t0
    if got != expected:
        raise BenchmarkError(f"{engine.name}: the document reopened from its state differs")
    out["extra"] = engine.extra(loaded) | prepared


# -- a sequential trace --------------------------------------------------------------------
def catchup_windows(n: int, behind: list[int]) -> list[int]:
    """The ks that fit in ``n`` edits, largest first. They are measured back to back at the
    end of the trace: a second replica syncs when the replay is ``sum(ks)`` edits from the
    end, then catches up after each window of ``k`` edits, the last one ending the trace."""
    ks: list[int] = []
    for k in sorted({k for k in behind if k > 0}):
        if sum(ks) + k >= n:
            break
        ks.append(k)
    return ks[::-1]


def sequential(engine: Engine, folder: Path, behind: list[int], work: Path,
               tick: Tick) -> tuple[dict[str, Any], str]:
    trace = _flat.read_sequential(folder, engine.unit)
    n = trace.txns
    out = _figures(engine, "sequential", n, rss_mb())
    ks = catchup_windows(n, behind)
    start = n - sum(ks)
    doc = engine.new_doc(work, 0, track=False)
    if trace.start:
        doc.edit(((0, 0, trace.start),))
    apply_s = _replay(trace, doc, 0, start, tick)
    out["rss_apply_mb"] = peak_rss_mb()  # before the second replica exists
    # A new replica merges the whole document (and then follows it for the catch-ups).
    full = doc.full_update()
    t0 = perf_counter()
    behind_doc = engine.merge_new(work, full)
    merged_text = behind_doc.text()
    out["merge_s"] = perf_counter() - t0
    out["merge_at"] = start
    _check(f"{engine.name}: a new replica merging the whole document", merged_text, doc.text())
    engine.catch_up(doc, behind_doc)  # untimed: a sync state kept per peer (Automerge) starts here
    at = start
    for k in ks:
        apply_s += _replay(trace, doc, at, at + k, tick)
        at += k
        cu = engine.catch_up(doc, behind_doc)
        _check(f"{engine.name} catching up {k} edits", behind_doc.text(), doc.text())
        out["catchup"][str(k)] = {"bytes": cu.wire_bytes, "seconds": cu.seconds, "detail": cu.detail}
    out["apply_s"] = apply_s
    text = doc.text()
    _check(f"{engine.name} after the replay", text, trace.end)
    _state_and_load(engine, doc, out, lambda d: d.text(), text)
    out["rss_peak_mb"] = peak_rss_mb()
    return out, text


def _replay(trace: Trace, doc: Doc, lo: int, hi: int, tick: Tick) -> float:
    """Edits ``lo`` to ``hi``, one transaction each, then ``settle``: the seconds they took."""
    spent = 0.0
    for a, b in chunks(hi - lo):
        t0 = perf_counter()
        for patches in trace.patches(lo + a, lo + b):
            doc.edit(patches)
        spent += perf_counter() - t0
        tick(lo + b)
    t0 = perf_counter()
    doc.settle()
    return spent + perf_counter() - t0


# -- a concurrent trace --------------------------------------------------------------------
def _txn_patches(s: concurrent.Schedule, j: int) -> tuple[Patch, ...]:
    lo = s.txn_ends[j - 1] if j else 0
    return tuple((s.positions[i], s.deletes[i], s.inserts[s.starts[i]:s.starts[i + 1]])
                 for i in range(lo, s.txn_ends[j]))


def replay_concurrent(engine: Engine, folder: Path, work: Path, tick: Tick) -> tuple[dict[str, Any], str]:
    s = concurrent.read(folder)
    out = _figures(engine, "concurrent", s.txns, rss_mb())
    docs = [engine.new_doc(work, a, track=True) for a in range(s.agents)]
    segments: list[Update] = []
    apply_s = merge_s = 0.0
    agent, ends, segs, export = s.agent, s.merge_ends, s.merge_segs, s.export
    for lo, hi in chunks(s.txns):
        for j in range(lo, hi):
            doc = docs[agent[j]]
            first = ends[j - 1] if j else 0
            patches = _txn_patches(s, j)
            t0 = perf_counter()
            for sid in segs[first:ends[j]]:  # bring this agent's replica to the txn's parents
                doc.merge(segments[sid])
            t1 = perf_counter()
            doc.edit(patches)
            if export[j]:
                segments.append(doc.take_local())
            t2 = perf_counter()
            merge_s += t1 - t0
            apply_s += t2 - t1
        tick(hi)
    final = docs[agent[s.txns - 1]]
    t0 = perf_counter()
    final.settle()
    out |= {"apply_s": apply_s + perf_counter() - t0, "merge_s": merge_s, "rss_apply_mb": peak_rss_mb(),
            "segments": s.segments, "merges": s.merges}
    text = final.text()
    _state_and_load(engine, final, out, lambda d: d.text(), text)
    out["rss_peak_mb"] = peak_rss_mb()
    return out, text


# -- the field-team workload ---------------------------------------------------------------
def field_team(engine: Engine, folder: Path, work: Path, tick: Tick) -> tuple[dict[str, Any], dict[str, Any]]:
    w = field.read(folder)
    ids, initial, batch = w["ids"], w["initial"], w["seed_batch"]
    total = -(-len(ids) // batch) + w["rounds"] * w["devices"] * w["edits"]
    out = _figures(engine, "field", total, rss_mb())
    docs = [engine.new_doc(work, d, track=True) for d in range(w["devices"])]
    apply_s = merge_s = 0.0
    t0 = perf_counter()
    for lo in range(0, len(ids), batch):  # device 0 creates the assets, everyone merges them
        docs[0].seed(ids[lo:lo + batch], initial[lo:lo + batch])
    docs[0].settle()
    seeded = docs[0].take_local()
    t1 = perf_counter()
    for doc in docs[1:]:
        doc.merge(seeded)
    t2 = perf_counter()
    apply_s, merge_s = t1 - t0, t2 - t1
    done = -(-len(ids) // batch)
    tick(done)
    for sessions in w["work"]:
        updates: list[Update] = []
        for device, session in enumerate(sessions):
            doc = docs[device]
            t0 = perf_counter()
            for asset, fields in session:
                doc.put(ids[asset], fields)
            doc.settle()
            updates.append(doc.take_local())
            apply_s += perf_counter() - t0
            done += len(session)
            tick(done)
        t0 = perf_counter()
        for device, update in enumerate(updates):  # everyone merges everyone
            for other, doc in enumerate(docs):
                if other != device:
                    doc.merge(update)
        merge_s += perf_counter() - t0
    out |= {"apply_s": apply_s, "merge_s": merge_s, "rss_apply_mb": peak_rss_mb()}
    contents = [doc.content() for doc in docs]
    for device, content in enumerate(contents[1:], 1):
        if content != contents[0]:
            bad = next(k for k in contents[0] if content.get(k) != contents[0][k])
            raise BenchmarkError(f"{engine.name}: device {device} disagrees with device 0 on {bad}: "
                                 f"{content.get(bad)} != {contents[0][bad]}")
    _state_and_load(engine, docs[0], out, lambda d: d.content(), contents[0])
    out["rss_peak_mb"] = peak_rss_mb()
    return out, contents[0]

