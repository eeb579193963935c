"""Editing traces (josephg/editing-traces format) in a compact form for replay.

The JSON form of a long trace costs the parsing process far more memory than the document
being edited (hundreds of thousands of small lists and strings). The parent parses it once
and hands each child a :class:`Trace` of flat arrays, so the child's peak RSS measures the
engine rather than the trace.
"""

from __future__ import annotations

import gzip
import json
import pickle
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Patch = tuple[int, int, str]  # (position, characters deleted, text inserted)


@dataclass(frozen=True, slots=True)
class Trace:
    """A sequential trace: patch ``i`` deletes ``deletes[i]`` characters at ``positions[i]``,
    then inserts ``inserts[starts[i]:starts[i + 1]]`` there; transaction ``t`` is patches
    ``txn_ends[t - 1]`` (or 0) to ``txn_ends[t]``."""

    start: str
    end: str
    positions: array[int]
    deletes: array[int]
    starts: array[int]
    inserts: str
    txn_ends: array[int]

    @property
    def txns(self) -> int:
        return len(self.txn_ends)

    def patches(self, lo: int, hi: int) -> Iterator[tuple[Patch, ...]]:
        """The patches of transactions ``lo`` to ``hi``, one tuple per transaction."""
        pos, dels, starts, text, ends = self.positions, self.deletes, self.starts, self.inserts, self.txn_ends
        first = ends[lo - 1] if lo else 0
        for t in range(lo, hi):
            last = ends[t]
            if last == first + 1:  # the common case, kept lean: this runs inside the timed loop
                yield ((pos[first], dels[first], text[starts[first]:starts[last]]),)
            else:
                yield tuple((pos[i], dels[i], text[starts[i]:starts[i + 1]]) for i in range(first, last))
            first = last

    def replay(self, txns: int) -> str:
        """The text after the first ``txns`` transactions, by plain string surgery: the
        reference every engine's result is checked against."""
        text = self.start
        for patches in self.patches(0, txns):
            for pos, deleted, inserted in patches:
                text = text[:pos] + inserted + text[pos + deleted:]
        return text


def load_json_trace(path: Path) -> Trace:
    """Parse a ``.json.gz`` trace into a :class:`Trace`.

    Raises:
        ValueError: the file is not a sequential trace of this format.
    """
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw: dict[str, Any] = json.load(f)
    try:
        return _compact(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a sequential editing trace: {exc!r}") from None


def _compact(raw: dict[str, Any]) -> Trace:
    positions, deletes, starts, ends = array("q"), array("q"), array("q", [0]), array("q")
    inserted: list[str] = []
    offset = 0
    for txn in raw["txns"]:
        for pos, deleted, text in txn["patches"]:
            positions.append(int(pos))
            deletes.append(int(deleted))
            inserted.append(str(text))
            offset += len(text)
            starts.append(offset)
        ends.append(len(positions))
    return Trace(str(raw["startContent"]), str(raw["endContent"]), positions, deletes, starts,
                 "".join(inserted), ends)


def save(trace: Trace, path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump(trace, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: Path) -> Trace:
    """Load what :func:`save` wrote (our own temporary file, so unpickling is safe)."""
    with path.open("rb") as f:
        trace = pickle.load(f)
    if not isinstance(trace, Trace):
        raise TypeError(f"{path} does not hold a Trace")
    return trace
