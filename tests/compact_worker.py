"""A separate process for the compaction crash test: ``python compact_worker.py DIR``.

Each iteration appends to one text, seals, and folds the entity into a new snapshot (the
compaction a kill -9 must not break); it prints the iteration once its edit was sealed.
"""

from __future__ import annotations

import sys

from crdt_sync import NotFound, Replica

SPACE = "fold"


def main(data: str) -> None:
    replica = Replica(data)
    space = replica.space(SPACE)
    try:
        start = len(space.get("docs", "d")["body"].split(";")) - 1
    except NotFound:
        start = 0
    print("ready", start, flush=True)
    key = (replica.space_id(SPACE), "docs", "d")
    for i in range(start, start + 100_000):
        with space.transaction() as tx:
            tx.entity("docs", "d").text("body").append(f"{i};")
            tx.put("items", f"i{i}", {"n": i})
        replica.seal()
        print(i, flush=True)  # sealed: from here on it must survive the kill
        replica._sealer.compact(key, parts=1)  # fold every time: the kill lands inside one


if __name__ == "__main__":
    main(sys.argv[1])
