"""A separate process for the crash and multi-process tests: ``python proc_worker.py MODE ...``.

It talks to the test only through stdout lines (flushed after each) and its exit code, and
to other processes only through the shared data directory: that is the point.

Modes:
    put DIR SPACE COLLECTION ID JSON      put the fields, close, exit.
    crash DIR SEAL_INTERVAL LIMIT         edit in a loop, print each counter once its edit returned.
    mp DIR NAME OTHER N SEAL_INTERVAL     write concurrently with OTHER, meet it, report JSON.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from crdt_sync import Change, NotFound, Replica

#: How long a worker waits for the other process before giving up (a failure, not a hang).
WAIT_TIMEOUT = 60.0
CRASH_SPACE = "crash"
MP_SPACE = "mp"


def wait_until(replica: Replica, condition: Callable[[], bool], what: str) -> None:
    """Poll the shared store until ``condition()`` (bounded). Another process's commits are
    only visible through the store, so this is a condition wait, not a sleep that hopes."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)  # yield the CPU to the process we are waiting for (2 cores)
        replica.refresh()


def put(data: str, space: str, collection: str, id: str, fields: str) -> None:
    with Replica(data) as replica:
        replica.space(space).put(collection, id, json.loads(fields))


def crash(data: str, seal_interval: str, limit: str) -> None:
    """Each iteration is one transaction over two entities. ``state/log`` carries the counter,
    a list and a text that must stay gap-free; ``items/i<N>`` is one entity per edit."""
    replica = Replica(data, seal_interval=float(seal_interval))
    space = replica.space(CRASH_SPACE)
    try:
        start = len(space.get("state", "log")["seq"])
    except NotFound:
        start = 0
    print("ready", start, flush=True)
    for i in range(start, start + int(limit)):
        with space.transaction() as tx:
            tx.put("items", f"i{i}", {"n": i})
            log = tx.entity("state", "log")
            log.set("counter", i)
            log.list("seq").append(i)
            log.text("text").append(f"{i};")
        print(i, flush=True)  # only now is the edit reported as returned
    replica.close()


def mp(data: str, name: str, other: str, n_text: str, seal_interval: str) -> None:
    n = int(n_text)
    replica = Replica(data, seal_interval=float(seal_interval))
    space = replica.space(MP_SPACE)
    seen: list[Change] = []
    space.observe(seen.extend)

    def present(collection: str, id: str) -> Callable[[], bool]:
        return lambda: space.exists(collection, id)

    # Meet first, so the edit loops below really overlap.
    space.put("markers", f"{name}-ready", {"by": name})
    replica.seal()  # make it visible to the other process now
    wait_until(replica, present("markers", f"{other}-ready"), f"{other}-ready")

    for i in range(n):
        with space.transaction() as tx:
            tx.put("own", f"{name}-{i}", {"i": i, "by": name})
            shared = tx.entity("shared", "doc")
            shared.set(f"{name}{i}", i)
            shared.set("last", f"{name}-{i}")  # both processes race on this field
            shared.text("log").append(f"<{name}{i}>")
            shared.list("items").append(f"{name}{i}")

    space.put("markers", f"{name}-done", {"n": n})
    replica.seal()
    wait_until(replica, present("markers", f"{other}-done"), f"{other}-done")

    # Everything the other process reported done must be readable here, in this process.
    other_n = space.get("markers", f"{other}-done")["n"]
    missing = [j for j in range(other_n) if not space.exists("own", f"{other}-{j}")]
    doc = space.get("shared", "doc")
    missing_fields = [j for j in range(other_n) if doc.get(f"{other}{j}") != j]
    missing_text = [j for j in range(other_n) if f"<{other}{j}>" not in doc.get("log", "")]
    store_changes = sorted({c.id for c in seen if c.origin == "store" and c.collection == "own"
                            and c.id.startswith(f"{other}-")})
    replica.close()
    report: dict[str, Any] = {
        "name": name, "written": n, "other_written": other_n, "missing": missing,
        "missing_fields": missing_fields, "missing_text": missing_text,
        "store_changes_seen": len(store_changes),
    }
    print(json.dumps(report), flush=True)


def main(argv: list[str]) -> None:
    modes: dict[str, Callable[..., None]] = {"put": put, "crash": crash, "mp": mp}
    modes[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
