"""Workload files the parent writes once and every engine's child reads, Python or Node.

A trace goes to the children as flat little-endian int32 arrays plus one JSON file of
strings and sizes: Node reads them into typed arrays without parsing hundreds of thousands
of small JSON lists, which would cost it more memory than the document being edited (the
same reason :mod:`benchmarks._trace` keeps traces compact for Python children).

Index units: the traces count Unicode code points. pycrdt and y-py count UTF-8 bytes, Yjs
and Automerge UTF-16 code units, so for a non-ASCII trace the parent also writes positions
and lengths in those units, converted here once, outside any timed loop.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._trace import Trace

UNITS = ("cp", "utf8", "utf16")
#: Code units per code point above one, for the units that are not code points.
_EXTRA: dict[str, Any] = {"utf8": lambda c: len(c.encode("utf-8")) - 1,
                          "utf16": lambda c: len(c.encode("utf-16-le")) // 2 - 1}


def write_ints(path: Path, values: Sequence[int]) -> None:
    out = array("i", values)
    if out.itemsize != 4:
        raise RuntimeError("this platform's C int is not 32 bits")
    if sys.byteorder != "little":
        out.byteswap()
    path.write_bytes(out.tobytes())


def read_ints(path: Path) -> array[int]:
    out = array("i")
    out.frombytes(path.read_bytes())
    if sys.byteorder != "little":
        out.byteswap()
    return out


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def read_meta(folder: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return meta


# -- sequential traces ---------------------------------------------------------------------
def write_sequential(trace: Trace, folder: Path, name: str) -> dict[str, Any]:
    """Write ``trace`` for the children; returns its meta (also in ``meta.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    ascii_only = trace.start.isascii() and trace.inserts.isascii()
    write_ints(folder / "starts.i32", trace.starts)
    write_ints(folder / "ends.i32", trace.txn_ends)
    write_ints(folder / "pos.cp.i32", trace.positions)
    write_ints(folder / "del.cp.i32", trace.deletes)
    if not ascii_only:
        for unit, (pos, dels) in _convert(trace).items():
            write_ints(folder / f"pos.{unit}.i32", pos)
            write_ints(folder / f"del.{unit}.i32", dels)
    meta = {"kind": "sequential", "name": name, "start": trace.start, "end": trace.end,
            "inserts": trace.inserts, "txns": trace.txns, "patches": len(trace.positions),
            "ascii": ascii_only}
    write_meta(folder, meta)
    return meta


def read_sequential(folder: Path, unit: str) -> Trace:
    """The trace as :class:`~benchmarks._trace.Trace`, positions and lengths in ``unit``."""
    meta = read_meta(folder)
    unit = "cp" if meta["ascii"] else unit
    return Trace(meta["start"], meta["end"], read_ints(folder / f"pos.{unit}.i32"),
                 read_ints(folder / f"del.{unit}.i32"), read_ints(folder / "starts.i32"),
                 meta["inserts"], read_ints(folder / "ends.i32"))


def _convert(trace: Trace) -> dict[str, tuple[array[int], array[int]]]:
    """Positions and lengths in UTF-8 and UTF-16 units.

    Keeps only the non-ASCII characters of the document (their index and extra units), so
    a long, mostly-ASCII document costs per edit what its few wide characters cost, not its
    length.
    """
    wide: list[tuple[int, str]] = [(i, c) for i, c in enumerate(trace.start) if not c.isascii()]
    out = {u: (array("i"), array("i")) for u in _EXTRA}
    pos, dels, starts, text = trace.positions, trace.deletes, trace.starts, trace.inserts
    for i in range(len(pos)):
        at, deleted, inserted = pos[i], dels[i], text[starts[i]:starts[i + 1]]
        for unit, extra in _EXTRA.items():
            before = sum(extra(c) for j, c in wide if j < at)
            within = sum(extra(c) for j, c in wide if at <= j < at + deleted)
            out[unit][0].append(at + before)
            out[unit][1].append(deleted + within)
        shift = len(inserted) - deleted
        wide = [(j, c) for j, c in wide if j < at] \
            + [(at + k, c) for k, c in enumerate(inserted) if not c.isascii()] \
            + [(j + shift, c) for j, c in wide if j >= at + deleted]
    return out
