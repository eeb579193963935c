"""The parent's side of the workloads: prepare each once, and check what an engine ended on."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _trace
from .._harness import BenchmarkError
from . import _flat, concurrent
from . import field as field_workload

#: Why a content is wrong, or None if it is right.
Checker = Callable[[Path], str | None]


@dataclass
class Workload:
    """One prepared workload: the folder the children read, and how to check their result."""

    name: str
    kind: str  # "sequential", "concurrent" or "field"
    folder: Path
    txns: int  # transactions: the workload's size
    check: Checker
    ascii: bool = True
    info: dict[str, Any] = field(default_factory=dict)


def _text_checker(expected: str) -> Checker:
    def check(content: Path) -> str | None:
        got = content.read_text(encoding="utf-8")
        if got == expected:
            return None
        at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                  min(len(got), len(expected)))
        return (f"final text differs from the expected at character {at} of {len(expected)}: "
                f"{got[at:at + 30]!r} != {expected[at:at + 30]!r}")
    return check


def trace_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".json")


def prepare_trace(path: Path, work: Path, limit: int | None) -> Workload:
    """Parse an editing trace (either kind) and write it for the children.

    Raises:
        BenchmarkError: the file is not a trace, or replaying it does not give its endContent.
    """
    name = trace_name(path)
    folder = work / name
    try:
        raw = concurrent.load_raw(path)
        if concurrent.is_concurrent(raw):
            schedule = concurrent.schedule(raw)
            meta = concurrent.write(schedule, folder, name)
            return Workload(name, "concurrent", folder, schedule.txns, _text_checker(schedule.end),
                            meta["ascii"], {"agents": schedule.agents, "merges": schedule.merges,
                                            "segments": schedule.segments, "patches": meta["patches"]})
        del raw  # the compact form is all the children need
        trace = _trace.load_json_trace(path)
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{path}: {exc}") from None
    return _prepare_sequential(trace, name, folder, limit)


def _prepare_sequential(trace: _trace.Trace, name: str, folder: Path, limit: int | None) -> Workload:
    n = trace.txns if limit is None else min(limit, trace.txns)
    limited = n < trace.txns
    if limited:
        end = trace.txn_ends[n - 1]
        expected = trace.replay(n)
        trace = _trace.Trace(trace.start, expected, trace.positions[:end], trace.deletes[:end],
                             trace.starts[:end + 1], trace.inserts[:trace.starts[end]], trace.txn_ends[:n])
    elif trace.replay(n) != trace.end:
        raise BenchmarkError(f"{name}: replaying the trace as plain text does not give its endContent")
    meta = _flat.write_sequential(trace, folder, name)
    return Workload(name, "sequential", folder, n, _text_checker(trace.end), meta["ascii"],
                    {"patches": meta["patches"], "limited": limited})


def prepare_field(work: Path, devices: int, entities: int, rounds: int, edits: int,
                  seed: int) -> Workload:
    w = field_workload.generate(devices, entities, rounds, edits, seed)
    folder = work / w.name
    field_workload.write(w, folder)
    allowed = field_workload.candidates(w)

    def check(content: Path) -> str | None:
        return field_workload.check(w, allowed, json.loads(content.read_text(encoding="utf-8")))

    return Workload(w.name, "field", folder, w.total_edits, check, True,
                    {"devices": devices, "entities": entities, "rounds": rounds, "edits": edits,
                     "seed": seed})
