"""A writer for the damage tests: ``python damage_worker.py DIR N`` puts ``items/i<k>``
``{"n": k}`` in space ``damage`` for k in 0..N-1, one transaction (one journal record) each,
prints ``k`` once its put returned, then ``done`` and waits for stdin to close (the test
kills it first: its journal is then a dead process's, nothing of it sealed)."""

from __future__ import annotations

import sys

from crdt_sync import Replica

SPACE = "damage"


def main(data: str, count: str) -> None:
    replica = Replica(data, seal_interval=1e9, seal_max_wait=1e9)  # nothing sealed before the kill
    space = replica.space(SPACE)
    for k in range(int(count)):
        space.put("items", f"i{k}", {"n": k})
        print(k, flush=True)
    print("done", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(*sys.argv[1:])
