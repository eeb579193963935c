"""Property: a device that imports a snapshot and the tail holds exactly what one that imported
the whole history holds (entities, conflicts, version vector), whatever the edits by two or
three members, wherever the snapshot falls among them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync import Replica
from crdt_sync.bundle import decode_bundle
from tests.helpers import share, space_state

ENTITIES = ["pump", "valve", "gauge"]

#: one step: (member index, entity, field, value or None for a delete, sync afterwards?)
steps = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(ENTITIES), st.sampled_from(["n", "s"]),
                           st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3)), st.booleans()),
                 min_size=1, max_size=14)


def catch_up(src: Replica, dst: Replica, space: str) -> None:
    dst.import_bundle(src.export_bundle(space, since=dst.version_vector(space)))


def run(members: list[Replica], space: str, todo: list[tuple[int, str, str, object, bool]]) -> None:
    admin = members[0]
    for who, entity, field, value, sync in todo:
        member = members[who % len(members)]
        sp = member.space(space)
        if value is None:
            if entity in [e for _c, e in sp.list("equipment")]:
                sp.delete("equipment", entity)
        else:
            sp.put("equipment", entity, {field: value})
        member.seal()
        if sync:  # the admin hears of it (the snapshot covers what the admin holds)
            catch_up(member, admin, space)
            catch_up(admin, member, space)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 3), before=steps, after=steps)
def test_snapshot_and_tail_equal_full_history(n: int, before: list[tuple[int, str, str, object, bool]],
                                              after: list[tuple[int, str, str, object, bool]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        members = [Replica(root / f"m{i}", seal_interval=0) for i in range(n)]
        fresh = Replica(root / "fresh", seal_interval=0)
        full = Replica(root / "full", seal_interval=0)
        try:
            admin = members[0]
            space = share(admin, *members[1:], name="site", rights="write")
            run(members, space, before)
            admin.snapshot(space)  # at a random point
            run(members, space, after)
            for member in members[1:]:
                catch_up(member, admin, space)
            admin.grant(space, [fresh.device_id, full.device_id], "write")
            bundle = admin.export_bundle(space, snapshot=True)
            assert decode_bundle(bundle).snapshot is not None
            assert fresh.import_bundle(bundle).snapshot == "applied"
            full.import_bundle(admin.export_bundle(space))
            assert fresh.rejections() == [] and fresh.quarantined() == []
            assert space_state(fresh, space) == space_state(full, space) == space_state(admin, space)
            assert fresh.version_vector(space) == full.version_vector(space) == admin.version_vector(space)
        finally:
            for replica in (*members, fresh, full):
                replica.close()
