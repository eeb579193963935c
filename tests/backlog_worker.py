"""A separate process that makes an offline backlog: ``python -m tests.backlog_worker DIR SPACE N``.

It opens the replica at DIR, makes N small transactions in SPACE (a space it holds, by name
or id; a new name makes a space of its own), each sealed into its own envelope (a device
that edited for a long time without a link), prints ``made N`` and exits.
Run in its own process so the test's event loop never waits on it.
"""

from __future__ import annotations

import sys

from crdt_sync import Replica


def make(data: str, space: str, count: int) -> int:
    """Returns how many envelopes of the device the space gained."""
    with Replica(data, seal_interval=0) as replica:
        sp = replica.space(space)
        before = replica.version_vector(sp.id).get(replica.device_id, 0)
        for i in range(count):
            sp.put("log", f"e{i}", {"n": i})
            replica.seal()
        return replica.version_vector(sp.id)[replica.device_id] - before


if __name__ == "__main__":
    made = make(sys.argv[1], sys.argv[2], int(sys.argv[3]))
    print("made", made, flush=True)
