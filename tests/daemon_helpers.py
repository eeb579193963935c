"""Helpers for the daemon tests: wait, on replica change events, until replicas agree."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from crdt_sync import Replica
from tests.helpers import SHARED
from tests.sync_helpers import WAIT


async def until(replicas: list[Replica], done: Callable[[], bool], limit: float = 3 * WAIT) -> None:
    """Wait until ``done()`` (checked at each change of any of ``replicas``), bounded by ``limit``."""
    changed = asyncio.Event()
    stops = [r.observe(lambda _c: changed.set()) for r in replicas]
    try:
        async with asyncio.timeout(limit):
            while not done():
                changed.clear()
                await changed.wait()
    finally:
        for stop in stops:
            stop()


def total(replica: Replica, space: str) -> int:
    """Envelopes of ``space`` that ``replica`` holds beyond the :func:`tests.helpers.share`
    set-up (the admin's genesis, label and grants), so that counts are of edits."""
    return sum(replica.version_vector(space).values()) - SHARED


async def converged(replicas: list[Replica], space: str, want: int, limit: float = 3 * WAIT) -> None:
    """Wait until every replica holds ``want`` envelopes of ``space`` (and so the same)."""
    def done() -> bool:
        return all(total(r, space) >= want for r in replicas)
    try:
        await until(replicas, done, limit)
    except TimeoutError:
        raise AssertionError(f"not converged on {want}: {[total(r, space) for r in replicas]}") from None
    vvs = [r.version_vector(space) for r in replicas]
    assert all(vv == vvs[0] for vv in vvs), vvs
