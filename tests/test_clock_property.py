"""Property: devices whose clocks run far ahead (a day and more, the year 3000, just below the
end of the range) never reach honest devices over sessions that lose, duplicate and reorder
frames, never move an honest device's clock past its wall time plus the skew, and never stop
the honest devices from converging. Hostile envelopes signed by hand with out-of-range or
inconsistent clocks are refused without costing the session anything but themselves.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from crdt_sync import Rejected, Replica
from crdt_sync.envelope import seal
from crdt_sync.hlc import COUNTER_BITS, MAX_HLC
from crdt_sync.identity import Identity
from crdt_sync.payload import encode_payload, pack_item
from crdt_sync.transports.memory import LinkConditions, MemoryNetwork
from tests.helpers import ManualClock
from tests.sync_helpers import FAST, SPACE, admit, data_payload, snapshot, sync_over

DAY_MS = 24 * 3600 * 1000
NOW_MS = 1_790_000_000_000
AHEAD = st.sampled_from([2 * DAY_MS, 400 * DAY_MS, 32_503_680_000_000 - NOW_MS,
                         ((MAX_HLC - 1) >> COUNTER_BITS) - NOW_MS])


def hostile(n: int) -> bytes:
    """A stranger's signed envelope whose clocks break one rule (which one: ``n``)."""
    key = Identity.generate()
    env_hlc = NOW_MS << COUNTER_BITS
    case = n % 4
    hlc = [1 << 62, 2**64 - 1, env_hlc, env_hlc][case]
    item = env_hlc + 1 if case == 2 else min(hlc, env_hlc)
    register = 2**64 - 1 if case == 3 else item
    doc: Doc[object] = Doc(client_id=9)
    doc.get("f", type=Map)["status\x009"] = cbor2.dumps([register, key.id, 0, "hostile"])
    payload = encode_payload([("eq", "e0", pack_item(item, doc.get_update()))])
    return seal(key, SPACE, 1, b"", hlc, data_payload(key, 1, payload)).wire


def _session(a: Replica, b: Replica, link: LinkConditions, seed: int) -> tuple[bool, bool]:
    async def run() -> tuple[bool, bool]:
        network = MemoryNetwork(seed)
        la, lb = network.pair(link, link)
        try:
            oa, ob = await sync_over(a, b, la, lb, config=FAST, timeout=5.0)
            return oa.synced, ob.synced
        finally:
            network.close_all()

    return asyncio.run(run())


@settings(max_examples=8, deadline=None)
@given(ahead=st.lists(AHEAD, min_size=1, max_size=2), seed=st.integers(0, 2**16),
       steps=st.lists(st.tuples(st.sampled_from(["edit", "sync", "hostile"]), st.integers(0, 99)),
                      min_size=4, max_size=14))
def test_clocks_ahead_never_reach_or_drag_honest_devices(ahead: list[int], seed: int,
                                                         steps: list[tuple[str, int]]) -> None:
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="crdt-sync-clocks-"))
    walls = [ManualClock(NOW_MS + rng.randrange(-3_600_000, 3_600_000)) for _ in range(3)]
    honest = [admit(Replica(root / f"h{i}", wall=w, seal_interval=0)) for i, w in enumerate(walls)]
    fast = [admit(Replica(root / f"f{i}", wall=(lambda off=off: NOW_MS + off), seal_interval=0))
            for i, off in enumerate(ahead)]
    everyone = honest + fast
    lossy = LinkConditions(latency=0.001, jitter=0.002, loss=0.15, duplicate=0.15, reorder=0.2)
    try:
        for r in everyone:
            admit(r)
        for kind, n in steps:
            if kind == "edit":
                r = everyone[n % len(everyone)]
                r.space(SPACE).put("eq", f"e{n % 4}", {"by": r.device_id[:6], "n": n})
                r.seal()
            elif kind == "sync":
                a, b = rng.sample(everyone, 2)
                _session(a, b, lossy, rng.randrange(2**16))
            else:  # a stranger's envelope with a clock outside the rules, handed over directly
                target = honest[n % len(honest)]
                before = target.version_vector(SPACE)
                with pytest.raises(Rejected) as refused:
                    target.receive([hostile(n)], "stranger")
                assert refused.value.reason in ("clock-range", "item-clock", "register-clock")
                assert target.version_vector(SPACE) == before
            for h, wall in zip(honest, walls, strict=True):
                assert h._clock.last >> COUNTER_BITS <= wall.ms + DAY_MS
        # Converge the honest devices over clean links.
        for _ in range(4):
            for i in range(len(honest)):
                for j in range(i + 1, len(honest)):
                    assert _session(honest[i], honest[j], LinkConditions(), 0) == (True, True)
            vvs = [h.version_vector(SPACE) for h in honest]
            if all(v == vvs[0] for v in vvs):
                break
        else:
            raise AssertionError(f"honest devices did not converge: {vvs}")
        first = snapshot(honest[0]).key()
        assert all(snapshot(h).key() == first for h in honest[1:])
        for h in honest:
            assert not set(h.version_vector(SPACE)) & {f.device_id for f in fast}
            assert all(r.source == "stranger" for r in h.rejections()), h.rejections()
    finally:
        for r in everyone:
            r.close()
