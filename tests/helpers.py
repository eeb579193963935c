"""Small helpers shared by the store tests: injected clocks, state snapshots, bundle
exchange, chain checks and subprocess plumbing. Everything here drives real replicas on
real data directories; nothing replaces a part of the engine."""

from __future__ import annotations

import itertools
import math
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import strategies as st

from crdt_sync import NotFound, Replica
from crdt_sync.bundle import decode_bundle
from crdt_sync.envelope import open_envelope

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().with_name("proc_worker.py")
#: Upper bound for any wait on a subprocess; generous because CI machines stall.
PROC_TIMEOUT = 60.0

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class ManualClock:
    """A wall clock in milliseconds that only moves when a test says so (``Replica(wall=...)``)."""

    def __init__(self, ms: int = 1_700_000_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, ms: int = 1) -> None:
        self.ms += ms


# -- exact values ----------------------------------------------------------------------------
def typed(value: Any) -> Any:
    """A form of ``value`` whose ``==`` is exact: 1, 1.0 and True differ, -0.0 differs from
    0.0, bytes differ from str. Used to assert round-trips without Python's lenient ``==``."""
    if isinstance(value, bool) or value is None:
        return (type(value).__name__, value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex() if math.isfinite(value) else repr(value))
    if isinstance(value, (str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, (list, tuple)):
        return ("list", [typed(v) for v in value])
    if isinstance(value, dict):
        return ("dict", sorted((k, typed(v)) for k, v in value.items()))
    return ("other", repr(value))


def scalar_values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=INT_MIN, max_value=INT_MAX),
        st.sampled_from([INT_MIN, INT_MAX, 2**63, 2**63 - 1, 0, -1]),
        st.floats(allow_nan=False, allow_infinity=False),  # -0.0 and subnormals included
        st.text(max_size=24),  # every code point but lone surrogates, NUL and emoji included
        st.binary(max_size=32),
    )


def values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Every kind of value a field may hold, nested."""
    return st.recursive(
        scalar_values(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=max_leaves,
    )


# -- reading replicas ------------------------------------------------------------------------
def read_entity(replica: Replica, space: str, collection: str, id: str) -> dict[str, Any] | None:
    """The entity's fields, or None when it is missing or deleted."""
    try:
        return replica.space(space).get(collection, id)
    except NotFound:
        return None


def space_state(replica: Replica, space: str,
                keys: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Everything a caller can observe of one space, in an exactly comparable form.

    ``keys`` adds entities to read even if ``list()`` does not show them (deleted ones).
    """
    sp = replica.space(space)
    listed = sp.list()
    wanted = sorted(set(listed) | (keys or set()))
    return {
        "list": listed,
        "entities": {key: typed(read_entity(replica, space, *key)) for key in wanted},
        "conflicts": typed([c.to_dict() for c in sp.conflicts()]),
        "vv": sp.version_vector(),
    }


#: How many envelopes of the admin's chain :func:`share` leaves: the genesis and keys (seq 1),
#: the label (seq 2) and the grants with their keys (seq 3). Each other device's chain is empty.
SHARED = 3
#: How many envelopes a space made by ``replica.space(name)`` starts with (genesis + keys, label).
CREATED = 2


def share(admin: Replica, *others: Replica, name: str = "site-42", rights: str = "admin",
          collections: list[str] | None = None) -> str:
    """Make one space that ``admin`` and every replica of ``others`` hold, and return its id
    (what to pass to ``replica.space(...)`` on each of them; the name works too). ``admin``
    creates it (or uses its space of that name) and grants ``rights`` to each other device,
    scoped to ``collections``, in one envelope; the others receive the genesis, the grants
    and the keys by bundle, and know the space by ``name``."""
    space = admin.space(name).id
    if others:
        admin.grant(space, [o.device_id for o in others], rights, collections)
        bundle = admin.export_bundle(space)
        for other in others:
            other.import_bundle(bundle)
    return space


def exchange(src: Replica, dst: Replica, space: str) -> tuple[int, int]:
    """Carry what ``dst`` lacks of ``space`` from ``src``; returns (applied, duplicates).

    A ``dst`` that does not hold the space yet is let in first, as :func:`share` does
    (``src`` grants it admin rights; its name on ``dst`` is the one on ``src``)."""
    space = src.space_id(space)  # (the id: a name is local to each device)
    if space not in dst.spaces() and src.secrets.keyring().secret(space) is not None:
        src.grant(space, dst.device_id, "admin")
    bundle = src.export_bundle(space, since=dst.version_vector(space))
    result = dst.import_bundle(bundle)
    return result.applied, result.duplicates


def sync_all(replicas: list[Replica], space: str, max_rounds: int = 5) -> None:
    """All-to-all exchange until every version vector is equal (bounded)."""
    space = replicas[0].space_id(space)
    for _ in range(max_rounds):
        for src in replicas:
            for dst in replicas:
                if src is not dst:
                    exchange(src, dst, space)
        vvs = [r.version_vector(space) for r in replicas]
        if all(vv == vvs[0] for vv in vvs):
            return
    raise AssertionError(f"not quiescent after {max_rounds} rounds: {vvs}")


def chains(replica: Replica, space: str) -> dict[str, int]:
    """Check every author's chain in a full export: seqs 1..n, each naming its predecessor's
    hash. Returns ``{author: number of envelopes}``."""
    bundle = decode_bundle(replica.export_bundle(space))
    by_author: dict[str, list[Any]] = {}
    for wire in bundle.envelopes:
        env = open_envelope(wire)
        by_author.setdefault(env.author, []).append(env)
    for author, envs in by_author.items():
        envs.sort(key=lambda e: e.seq)
        assert [e.seq for e in envs] == list(range(1, len(envs) + 1)), f"gap or fork in {author}'s chain"
        for prev, env in itertools.pairwise(envs):
            assert env.prev_hash == prev.hash, f"{author} seq {env.seq} does not follow seq {prev.seq}"
    return {author: len(envs) for author, envs in by_author.items()}


def device_seed(path: Path) -> bytes:
    """The device key seed kept in a data directory's key file (what a cloned device would copy)."""
    from crdt_sync.secrets import Secrets

    return Secrets.open(path, read_only=True).device_seed()


def bundle_parts(data: bytes) -> tuple[bytes, str, dict[str, int], dict[str, int], list[bytes]]:
    """The body of a bundle, unverified: (exporter key, space, vv, since, envelopes)."""
    body = cbor2.loads(cbor2.loads(data)[2])
    return bytes(body[0]), body[1], dict(body[2]), dict(body[3]), list(body[4])


# -- subprocesses ----------------------------------------------------------------------------
def spawn_worker(*args: str) -> subprocess.Popen[str]:
    """Start ``tests/proc_worker.py`` with ``args`` in a real subprocess, stdout piped."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


class LineReader:
    """Reads a subprocess's stdout on a thread so the test can wait for a line with a timeout
    (a plain ``readline()`` could block forever if the child hangs)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)  # EOF

    def next(self, timeout: float = PROC_TIMEOUT) -> str | None:
        """The next complete line, or None at EOF. Raises queue.Empty on timeout."""
        line = self._lines.get(timeout=timeout)
        return line

    def rest(self, timeout: float = PROC_TIMEOUT) -> list[str]:
        """Every remaining line up to EOF (call after the process ended)."""
        out: list[str] = []
        while (line := self.next(timeout)) is not None:
            out.append(line)
        self._thread.join(timeout)
        return out
