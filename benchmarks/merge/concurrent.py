"""Concurrent editing traces (josephg/editing-traces ``kind: concurrent``) as a replay schedule.

Each agent edits its own replica. Before transaction ``j`` of agent ``a``, ``a``'s replica
must hold exactly the transactions its ``parents`` reach. An agent's own transactions are
totally ordered (a rule of the format), so "the transactions reached" is a version vector
(how many of each agent's transactions), and what ``a`` lacks is, per other agent ``b``, a
contiguous run of ``b``'s transactions. Engines exchange those runs as their own update
format (a Yjs update, an Automerge change, a Loro update, a crdt-sync bundle): that is the
"fork at a version, then merge" the traces ask for, without any engine needing a fork API.

The schedule cuts each agent's history into *segments* at the points other agents merge
up to; an engine exports its local edits as one segment at each cut and applies, before
each transaction, the segments listed for it. Segment ids follow the order of export, which
is causal: a segment can only depend on segments exported before it.
"""

from __future__ import annotations

import gzip
import json
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _flat


@dataclass(frozen=True, slots=True)
class Schedule:
    """A concurrent trace ready for replay (patches flat, as in :class:`benchmarks._trace.Trace`)."""

    end: str
    agents: int
    agent: array[int]  # per transaction
    positions: array[int]  # per patch
    deletes: array[int]
    starts: array[int]  # per patch + 1: offsets into ``inserts``
    inserts: str
    txn_ends: array[int]  # per transaction: end of its patches
    export: array[int]  # per transaction: 1 if its agent exports a segment right after it
    merge_ends: array[int]  # per transaction: end of its segment ids in ``merge_segs``
    merge_segs: array[int]
    segments: int
    merges: int  # transactions with more than one parent

    @property
    def txns(self) -> int:
        return len(self.txn_ends)


def is_concurrent(raw: dict[str, Any]) -> bool:
    txns = raw.get("txns") or [{}]
    return raw.get("kind") == "concurrent" or "parents" in txns[0]


def load_raw(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        raw: dict[str, Any] = json.load(f)
    return raw


def schedule(raw: dict[str, Any]) -> Schedule:
    """Turn a parsed concurrent trace into a :class:`Schedule`.

    Raises:
        ValueError: the trace breaks the format's rules (parents must precede, an agent's
            transactions must be ordered).
    """
    try:
        return _schedule(raw)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"not a concurrent editing trace: {exc!r}") from None


def _schedule(raw: dict[str, Any]) -> Schedule:
    txns: list[dict[str, Any]] = raw["txns"]
    agents = int(raw.get("numAgents") or 1 + max(int(t["agent"]) for t in txns))
    vvs: list[list[int]] = []  # the version vector after each transaction
    known = [[0] * agents for _ in range(agents)]  # what each agent's replica holds
    requests: list[list[tuple[int, int, int]]] = []  # per txn: (agent b, from seq, to seq]
    cuts: list[set[int]] = [set() for _ in range(agents)]
    where: list[list[int]] = [[] for _ in range(agents)]  # agent's seq - 1 -> txn index
    seqs: list[int] = []  # txn index -> its agent's seq
    merges = 0
    for j, txn in enumerate(txns):
        a, parents = int(txn["agent"]), [int(p) for p in txn["parents"]]
        if any(not 0 <= p < j for p in parents):
            raise ValueError(f"transaction {j} has a parent that does not precede it")
        merges += len(parents) > 1
        base = [max((vvs[p][b] for p in parents), default=0) for b in range(agents)]
        if any(known[a][b] > base[b] for b in range(agents)):
            raise ValueError(f"transaction {j}: agent {a} already holds edits its parents do not")
        wanted = []
        for b in range(agents):
            if b != a and base[b] > known[a][b]:
                wanted.append((b, known[a][b], base[b]))
                cuts[b].add(base[b])
        requests.append(wanted)
        known[a] = base
        known[a][a] += 1
        where[a].append(j)
        seqs.append(known[a][a])
        vvs.append(list(known[a]))
    export = array("i", [0] * len(txns))
    for b in range(agents):
        for seq in cuts[b]:
            export[where[b][seq - 1]] = 1
    return _assemble(raw, agents, requests, cuts, export, seqs, merges)


def _assemble(raw: dict[str, Any], agents: int, requests: list[list[tuple[int, int, int]]],
              cuts: list[set[int]], export: array[int], seqs: list[int], merges: int) -> Schedule:
    # segment ids in the order of the transactions that end them, which is the order of export
    ids: dict[tuple[int, int], int] = {}
    for j, flag in enumerate(export):
        if flag:
            ids[(int(raw["txns"][j]["agent"]), seqs[j])] = len(ids)
    ordered_cuts = [sorted(c) for c in cuts]
    merge_ends, merge_segs = array("i"), array("i")
    for wanted in requests:
        segs = [ids[(b, cut)] for b, lo, hi in wanted for cut in ordered_cuts[b] if lo < cut <= hi]
        merge_segs.extend(sorted(segs))
        merge_ends.append(len(merge_segs))
    positions, deletes, starts, ends = array("i"), array("i"), array("i", [0]), array("i")
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
    agent = array("i", [int(t["agent"]) for t in raw["txns"]])
    return Schedule(str(raw["endContent"]), agents, agent, positions, deletes, starts, "".join(inserted),
                    ends, export, merge_ends, merge_segs, len(ids), merges)


def write(s: Schedule, folder: Path, name: str) -> dict[str, Any]:
    """Write the schedule for the children; returns its meta (also in ``meta.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for field, values in (("agent", s.agent), ("pos.cp", s.positions), ("del.cp", s.deletes),
                          ("starts", s.starts), ("ends", s.txn_ends), ("export", s.export),
                          ("merge_ends", s.merge_ends), ("merge_segs", s.merge_segs)):
        _flat.write_ints(folder / f"{field}.i32", values)
    meta = {"kind": "concurrent", "name": name, "end": s.end, "inserts": s.inserts, "agents": s.agents,
            "txns": s.txns, "patches": len(s.positions), "segments": s.segments, "merges": s.merges,
            "ascii": s.inserts.isascii()}
    _flat.write_meta(folder, meta)
    return meta


def read(folder: Path) -> Schedule:
    meta = _flat.read_meta(folder)
    r = {f: _flat.read_ints(folder / f"{f}.i32") for f in
         ("agent", "pos.cp", "del.cp", "starts", "ends", "export", "merge_ends", "merge_segs")}
    return Schedule(meta["end"], meta["agents"], r["agent"], r["pos.cp"], r["del.cp"], r["starts"],
                    meta["inserts"], r["ends"], r["export"], r["merge_ends"], r["merge_segs"],
                    meta["segments"], meta["merges"])
