"""The relay's storage outage (relay/outage.py): after a failed commit, pushes are refused at
once with the reason for a while, then one is let through to try."""

from __future__ import annotations

from crdt_sync.relay.outage import RETRY_AFTER, StoreOutage


def test_a_failed_commit_refuses_pushes_with_its_reason_then_lets_one_try() -> None:
    now = [100.0]
    outage = StoreOutage(clock=lambda: now[0])
    assert not outage.down and outage.refusal() is None
    outage.failed(OSError("cannot reach the relay's Postgres at postgresql://relay@db/relay\nmore"))
    refusal = outage.refusal()
    assert outage.down and refusal is not None
    assert "cannot reach the relay's Postgres" in refusal and "retry" in refusal and "more" not in refusal
    now[0] += RETRY_AFTER
    assert outage.refusal() is None and outage.down  # one push may try; still down until it commits
    outage.failed(OSError("still down"))
    assert outage.refusal() is not None and outage.failures == 2
    outage.committed()
    assert not outage.down and outage.refusal() is None
