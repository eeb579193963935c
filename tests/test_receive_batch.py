"""A received batch that touches more entities than the cache holds: the entities evicted
while it is applied are kept aside and indexed at its end without loading them again
(:meth:`crdt_sync.cache.EntityCache.hold`), and what the receiver holds is the same as
with a cache large enough for the whole batch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from crdt_sync import Replica
from crdt_sync.cache import EntityCache
from crdt_sync.store import EntityKey
from tests.helpers import share, space_state


def _writer_envelopes(writer: Replica, space: str, count: int) -> list[bytes]:
    setup = writer.version_vector(space)
    sp = writer.space(space)
    for i in range(count):
        sp.put("equipment", f"e{i}", {"n": i, "tag": f"t{i % 3}"})
        writer.seal()
    for i in range(0, count, 4):  # later envelopes of the batch write entities evicted since
        sp.put("equipment", f"e{i}", {"n": -i, "tag": "again"})
        writer.seal()
    return [env.wire for env in writer.sync_host.missing_envelopes(space, setup, 10 * count, 1 << 30)]


@pytest.mark.parametrize("cache_size", [1, 3, 12])
def test_batch_larger_than_the_cache_reads_and_indexes_as_a_large_cache(
        tmp_path: Path, cache_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: Counter[EntityKey] = Counter()
    load = EntityCache.load

    def counted(cache: EntityCache, key: EntityKey) -> object:
        loads[key] += 1
        return load(cache, key)

    with Replica(tmp_path / "w", seal_interval=0) as writer, \
            Replica(tmp_path / "small", seal_interval=0, cache_size=cache_size) as small, \
            Replica(tmp_path / "large", seal_interval=0) as large:
        space = share(writer, small, large)
        wires = _writer_envelopes(writer, space, 40)
        monkeypatch.setattr(EntityCache, "load", counted)
        for replica in (small, large):
            loads.clear()
            got = replica.accept(wires, "test", space)
            assert got.applied == len(wires)
            if replica is large or cache_size == 12:  # (12: 4 x 12 kept aside, all 40 fit)
                assert set(loads.values()) == {1}, "an entity of the batch was loaded twice"
        monkeypatch.undo()
        assert space_state(small, space) == space_state(large, space) == space_state(writer, space)
        for replica in (small, large):
            sp = replica.space(space)
            assert sorted(sp.find("equipment", tag="again")) == sorted(f"e{i}" for i in range(0, 40, 4))
            assert sp.get("equipment", "e5") == {"n": 5, "tag": "t2"}
        assert not small._cache._parked  # closed at the batch's end


def test_refused_batch_leaves_nothing_aside(tmp_path: Path) -> None:
    with Replica(tmp_path / "w", seal_interval=0) as writer, \
            Replica(tmp_path / "r", seal_interval=0, cache_size=2) as reader:
        space = share(writer, reader)
        wires = _writer_envelopes(writer, space, 12)
        bad = bytearray(wires[-1])
        bad[-1] ^= 1  # its signature no longer verifies: the whole batch is refused
        try:
            reader.accept([*wires[:-1], bytes(bad)], "test", space)
        except Exception:
            pass
        else:
            raise AssertionError("a batch with a bad signature was accepted")
        assert not reader._cache._parked
        assert reader.accept(wires, "test", space).applied == len(wires)
        assert space_state(reader, space) == space_state(writer, space)
