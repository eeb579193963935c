"""The generated field-team workload: devices editing typed fields of shared entities offline.

Device 0 creates ``entities`` assets (five typed fields each) and every device merges
them. Then, for each of ``rounds`` rounds, every device makes ``edits`` edits offline (one
transaction each, one or two fields of one asset; most edits go to a few hot assets, as a
team works on the same equipment), and everyone merges everyone's edits.

Concurrent writes to one field are resolved differently by each engine (Yjs and pycrdt by
client id, Automerge by actor id, Loro by Lamport time and peer, crdt-sync by hybrid logical
clock), so the check does not ask for one winner: every device must hold the same state,
and each field must hold one of the values written to it concurrently in its last round
(or before, if no one wrote it since). Everything is drawn from a seeded generator, so one
seed gives every engine the same work.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Fields = dict[str, Any]
#: (asset index, fields written) for one transaction
Edit = tuple[int, Fields]

STATUSES = ("open", "in-progress", "blocked", "done")
PEOPLE = ("ana", "bo", "chen", "dara", "eli", "femi", "gus", "hana")
#: the fraction of assets that are hot, and the fraction of edits that go to them
HOT_ASSETS, HOT_EDITS = 0.1, 0.8
SEED_BATCH = 100  # assets per seeding transaction


def asset_id(i: int) -> str:
    return f"asset-{i:06d}"


@dataclass(frozen=True, slots=True)
class FieldWorkload:
    devices: int
    entities: int
    rounds: int
    edits: int  # per device per round
    seed: int
    initial: list[Fields]  # per asset
    work: list[list[list[Edit]]]  # [round][device] -> edits

    @property
    def name(self) -> str:
        return f"field-{self.entities}"

    @property
    def total_edits(self) -> int:
        """Transactions, seeding batches included: the workload's size."""
        return -(-self.entities // SEED_BATCH) + self.rounds * self.devices * self.edits

    def to_json(self) -> dict[str, Any]:
        return {"kind": "field", "name": self.name, "devices": self.devices, "entities": self.entities,
                "rounds": self.rounds, "edits": self.edits, "seed_batch": SEED_BATCH,
                "ids": [asset_id(i) for i in range(self.entities)], "initial": self.initial,
                "work": self.work}


def _value(rng: random.Random, field: str) -> Any:
    if field == "status":
        return rng.choice(STATUSES)
    if field == "assignee":
        return rng.choice(PEOPLE)
    if field == "reading":
        return round(rng.uniform(0, 500), 2) + 0.125  # never integral: floats stay floats everywhere
    if field == "count":
        return rng.randrange(1_000_000)
    return rng.random() < 0.5  # "ok"


FIELDS = ("status", "assignee", "reading", "count", "ok")


def generate(devices: int, entities: int, rounds: int, edits: int, seed: int = 1) -> FieldWorkload:
    rng = random.Random(seed)
    initial = [{f: _value(rng, f) for f in FIELDS} for _ in range(entities)]
    hot = max(1, int(entities * HOT_ASSETS))
    work: list[list[list[Edit]]] = []
    for _ in range(rounds):
        per_device: list[list[Edit]] = []
        for _ in range(devices):
            session: list[Edit] = []
            for _ in range(edits):
                asset = rng.randrange(hot) if rng.random() < HOT_EDITS else rng.randrange(entities)
                names = rng.sample(FIELDS, rng.choice((1, 1, 2)))
                session.append((asset, {f: _value(rng, f) for f in names}))
            per_device.append(session)
        work.append(per_device)
    return FieldWorkload(devices, entities, rounds, edits, seed, initial, work)


def write(w: FieldWorkload, folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    data = w.to_json()
    (folder / "field.json").write_text(json.dumps(data), encoding="utf-8")
    meta = {k: v for k, v in data.items() if k not in ("ids", "initial", "work")}
    meta["txns"] = w.total_edits
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return meta


def read(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "field.json").read_text(encoding="utf-8"))
    return data


# -- the check -----------------------------------------------------------------------------
def _tagged(value: Any) -> tuple[str, Any]:
    """Compare values by kind: pycrdt and y-py hand back ints as floats, but a bool must stay
    a bool and a string a string."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return (type(value).__name__, value)


def candidates(w: FieldWorkload) -> list[dict[str, set[tuple[str, Any]]]]:
    """Per asset and field, the values a correct merge may end on."""
    out = [{f: {_tagged(v)} for f, v in fields.items()} for fields in w.initial]
    for per_device in w.work:
        last: dict[tuple[int, str], set[tuple[str, Any]]] = {}
        for session in per_device:
            final: dict[tuple[int, str], Any] = {}
            for asset, fields in session:
                for f, v in fields.items():
                    final[(asset, f)] = v  # a device's own later write replaces its earlier one
            for key, v in final.items():
                last.setdefault(key, set()).add(_tagged(v))
        for (asset, f), values in last.items():
            out[asset][f] = values
    return out


def check(w: FieldWorkload, allowed: list[dict[str, set[tuple[str, Any]]]],
          content: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why ``content`` (asset id -> fields) is not a correct merge, or None if it is."""
    if len(content) != w.entities:
        return f"{len(content)} assets, expected {w.entities}"
    for i, fields in enumerate(allowed):
        got = content.get(asset_id(i))
        if got is None:
            return f"{asset_id(i)} is missing"
        if set(got) != set(fields):
            return f"{asset_id(i)} has fields {sorted(got)}, expected {sorted(fields)}"
        for f, values in fields.items():
            if _tagged(got[f]) not in values:
                return f"{asset_id(i)}.{f} = {got[f]!r}, not one of {sorted(v for _, v in values)}"
    return None
