"""Which epoch a writer uses (docs/DESIGN.md): never one sealed to a device revoked since.

Two admins who revoke two devices at the same time each rotate the key, and each new epoch
is sealed to the device the other revoked. Once both revocations are known, a writer that
took the highest epoch would let a revoked device read what follows; the rule makes it
rotate again, to the readers that are left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.errors import NotFound
from tests.helpers import exchange, share


@pytest.fixture
def team(tmp_path: Path) -> Iterator[list[Replica]]:
    opened = [Replica(tmp_path / n, seal_interval=0) for n in ("a", "b", "c", "d")]
    try:
        yield opened
    finally:
        for r in opened:
            r.close()


def _reads(replica: Replica, space: str, entity: str) -> bool:
    try:
        return replica.space(space).get("notes", entity) is not None
    except NotFound:
        return False


def test_after_two_concurrent_revocations_a_writer_rotates_to_the_readers_left(team: list[Replica]) -> None:
    a, b, c, d = team
    space = share(a, b, c, d)
    a.revoke(space, c.device_id)  # a new epoch for a, b, d
    b.revoke(space, d.device_id)  # at the same time: a new epoch for a, b, c
    exchange(a, b, space)
    exchange(b, a, space)
    epochs = len(a.secrets.keyring().epochs(space))
    a.space(space).put("notes", "after", {"text": "for a and b only"})
    a.seal()
    bundle = a.export_bundle(space)
    for other in (b, c, d):
        other.import_bundle(bundle)
    assert _reads(b, space, "after")
    assert not _reads(c, space, "after") and not _reads(d, space, "after")
    assert len(a.secrets.keyring().epochs(space)) == epochs + 1, "a rotated before writing"
    # b writes next: it holds a's new epoch, which is clean, and uses it (no second rotation)
    b.space(space).put("notes", "reply", {"text": "ok"})
    b.seal()
    assert len(b.secrets.keyring().epochs(space)) == epochs + 1
    exchange(b, a, space)
    assert _reads(a, space, "reply")


def test_one_revocation_needs_no_second_rotation(team: list[Replica]) -> None:
    a, b, c, _ = team
    space = share(a, b, c)
    a.revoke(space, c.device_id)
    epochs = len(a.secrets.keyring().epochs(space))
    a.space(space).put("notes", "after", {"text": "x"})
    a.seal()
    assert len(a.secrets.keyring().epochs(space)) == epochs
    bundle = a.export_bundle(space)
    b.import_bundle(bundle)
    c.import_bundle(bundle)
    assert _reads(b, space, "after") and not _reads(c, space, "after")
