"""Clock values against the real relay over loopback WebSockets (issue 11, finding 3).

The relay applies the clock range to the one clock it can see (the envelope's HLC; payloads
stay unread), before anything is staged for its group commit, and holds back envelopes
stamped further ahead of its wall clock than ``max_clock_skew`` with the same session code as
devices. The year-3000 device is a real replica whose wall clock says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crdt_sync import Rejected
from crdt_sync.envelope import seal
from crdt_sync.hlc import COUNTER_BITS, MAX_HLC, wall_ms
from crdt_sync.identity import Identity
from crdt_sync.protocol.messages import (
    ClockSkew,
    Error,
    Quarantined,
    WireEnvelope,
)
from crdt_sync.relay.config import ConfigError, load_config
from tests.conftest import ReplicaFactory
from tests.helpers import SHARED, share
from tests.relay_envelopes import EnvelopeHost, SpaceMaker, identity, own_space
from tests.relay_helpers import (
    RawPeer,
    SwapEnvelopes,
    bystanders,
    rejections,
    run_cli,
    running_relay,
    sync_once,
)
from tests.sync_helpers import SPACE, admit, fill

YEAR_3000_MS = 32_503_680_000_000
DAY_MS = 24 * 3600 * 1000


async def test_hlc_beyond_sqlite_is_refused_before_the_group_commit(tmp_path: Path) -> None:
    """Before: an envelope HLC >= 2**63 passed the relay's checks and overflowed SQLite at
    commit; the relay then dropped the whole group commit, other devices' envelopes too."""
    async with running_relay(tmp_path / "relay") as relay:
        store = relay.store
        honest, hostile = Identity.generate(), Identity.generate()
        sp = SpaceMaker(honest)
        good = sp.open()
        # Both calls in one turn of the event loop: they would share one group commit.
        assert store.receive([good.wire], sp.space, True) == (1, 0, 0)
        for hlc in (1 << 63, 2**64 - 1, 1 << 62):
            bad = seal(hostile, sp.space, 1, b"", hlc, b"opaque")
            with pytest.raises(Rejected) as refused:
                store.receive([bad.wire], sp.space, True)
            assert refused.value.reason == "clock-range"
        await store.commit()
        committed = store.missing_envelopes(sp.space, {}, 10, 1 << 20)
        assert [(e.author, e.seq) for e in committed] == [(honest.id, 1)]


async def test_a_session_pushing_hlc_beyond_sqlite_is_refused(tmp_path: Path) -> None:
    async with running_relay(tmp_path / "relay") as relay, bystanders(relay.url) as check:
        sp, own = own_space(identity(), 1)
        mallory = EnvelopeHost(sp.creator, *own)
        key = mallory.identity
        env = seal(key, sp.space, 1, b"", 1 << 63, b"opaque")
        crafted = WireEnvelope(key.public_key, 1, env.hlc, env.payload, env.signature)

        async with RawPeer.open(relay.url, mallory) as raw:
            notice = await raw.converse(lambda m: isinstance(m, Error | Quarantined),
                                        tamper=SwapEnvelopes(crafted))
        # Signed, so attributable: the relay sets Mallory aside in the space (protocol 2)
        # rather than ending the session, and stores nothing of it.
        assert isinstance(notice, Quarantined) and notice.reason == "clock-range", notice
        assert notice.from_seq == 1
        assert mallory.device_id not in relay.store.version_vector(sp.space)
        await check("after-the-overflow")  # the other devices' envelopes are stored and sent
        assert relay.store.healthy()


async def test_a_device_that_took_a_time_near_the_end_still_syncs(tmp_path: Path,
                                                                  open_replica: ReplicaFactory) -> None:
    """Before: a device that took an envelope stamped just below 2**62 stamped its next edits
    at 2**62; every other device refused them and it could never pull again. Now its clock
    stays within a day of its wall clock, and it pushes and pulls through the relay."""
    async with running_relay(tmp_path / "relay") as relay:
        far = open_replica("far", wall=lambda: (MAX_HLC - 1) >> COUNTER_BITS, seal_interval=0)
        honest = open_replica("honest", seal_interval=0)
        other = open_replica("other", seal_interval=0)
        space = share(honest, far, other)  # honest's space (SHARED envelopes), stamped honestly
        fill(far, "far", 1, space)
        stamped = far.sync_host.missing_envelopes(space, honest.version_vector(space), 10, 1 << 20)
        assert MAX_HLC - stamped[0].hlc <= 1 << COUNTER_BITS  # just below the range's end
        honest.receive([e.wire for e in stamped], "far")  # a direct receive: no hold-back there
        fill(honest, "honest", 2, space)
        for device in (honest, other, honest):
            outcome = await sync_once(device, relay.url)
            assert outcome.synced and outcome.ok, outcome.closed
        assert relay.store.version_vector(space) == {honest.device_id: SHARED + 2}  # far's is held back
        assert other.version_vector(space) == {honest.device_id: SHARED + 2}
        assert relay.store.rejections() == []


async def test_year_3000_device_is_held_back_by_the_relay(tmp_path: Path,
                                                          open_replica: ReplicaFactory) -> None:
    """Before: the year-3000 device won every conflict and dragged every device's clock to
    the year 3000. Now the relay holds its envelopes back and tells it (CLOCK_SKEW); its
    session still ends synced, its status says that the relay refused its clock and by how
    much, and the honest devices keep their clocks and their writes."""
    async with running_relay(tmp_path / "relay") as relay:
        y3k = open_replica("y3k", wall=lambda: YEAR_3000_MS, seal_interval=0)
        a, b = open_replica("a", seal_interval=0), open_replica("b", seal_interval=0)
        space = share(a, y3k, b)  # a's space: its SHARED envelopes, then its edit
        a.space(space).put("eq", "pump", {"status": "honest"})
        a.seal()
        y3k.space(space).put("eq", "pump", {"status": "from the future"})
        y3k.seal()
        assert (await sync_once(a, relay.url)).synced
        out = await sync_once(y3k, relay.url)
        assert out.synced and out.ok, out.closed
        assert y3k.device_id not in relay.store.version_vector(space)
        assert y3k.version_vector(space)[a.device_id] == SHARED + 1  # it still pulls
        for device in (a, b):
            outcome = await sync_once(device, relay.url)
            assert outcome.synced and outcome.ok
            assert device.space(space).get("eq", "pump") == {"status": "honest"}
            assert device._clock.last >> COUNTER_BITS <= wall_ms() + DAY_MS
        again = await sync_once(y3k, relay.url)  # held back again, not stored, not an error
        assert again.synced and again.ok and y3k.device_id not in relay.store.version_vector(space)

        refused = y3k.status().clock_refusals
        assert [(r.peer, r.space, r.author, r.seq, r.mine) for r in refused] == [
            (relay.device_id, space, y3k.device_id, 1, True)]
        assert refused[0].ahead_ms > YEAR_3000_MS - wall_ms() - DAY_MS
        code, stdout, stderr = await run_cli("status", "--json", "--data", str(y3k.path))
        assert code == 0, stderr
        shown = json.loads(stdout)["clock_refusals"]
        assert [(r["peer"], r["author"], r["seq"], r["mine"]) for r in shown] == [
            (relay.device_id, y3k.device_id, 1, True)]
        code, stdout, stderr = await run_cli("status", "--data", str(y3k.path))
        assert code == 0, stderr
        assert "ahead" in stdout and "clock" in stdout and relay.device_id[:12] in stdout


async def test_the_relay_sends_clock_skew_not_an_error(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay") as relay:
        y3k = admit(open_replica("y3k", wall=lambda: YEAR_3000_MS, seal_interval=0))
        fill(y3k, "future", 2)
        async with RawPeer.open(relay.url, y3k) as raw:
            notice = await raw.converse(lambda m: isinstance(m, ClockSkew))
        assert isinstance(notice, ClockSkew)
        assert notice.seq == 1 and notice.ahead_ms > YEAR_3000_MS - wall_ms() - DAY_MS
        assert not any(isinstance(m, Error) for m in raw.received)


async def test_the_relay_skew_setting(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    """A relay that allows more skew takes what a device that allows less holds back: the
    device tells the relay, and the relay's session goes on."""
    async with running_relay(tmp_path / "relay", max_clock_skew=10 * DAY_MS / 1000) as relay:
        ahead = open_replica("ahead", wall=lambda: wall_ms() + 2 * DAY_MS, seal_interval=0)
        strict = open_replica("strict", max_clock_skew=DAY_MS / 1000)
        space = share(strict, ahead)  # strict's space: its SHARED envelopes are not ahead
        fill(ahead, "ahead", 1, space)
        assert (await sync_once(ahead, relay.url)).synced
        # within 10 days (ahead brought strict's SHARED envelopes too: it holds them)
        assert relay.store.version_vector(space) == {strict.device_id: SHARED, ahead.device_id: 1}
        outcome = await sync_once(strict, relay.url)
        assert outcome.synced and outcome.ok, outcome.closed
        assert ahead.device_id not in strict.version_vector(space)  # beyond one day


async def test_cli_sync_says_what_it_holds_back(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    """A real ``crdt-sync sync`` process (default skew: a day) syncing from a relay that
    allows ten days: it holds back what is stamped two days ahead, exits 0 and says so."""
    async with running_relay(tmp_path / "relay", max_clock_skew=10 * DAY_MS / 1000) as relay:
        ahead = open_replica("ahead", wall=lambda: wall_ms() + 2 * DAY_MS, seal_interval=0)
        cli = open_replica("cli")  # the CLI's device: it made the space and let ahead in
        space = share(cli, ahead)
        cli.close()
        fill(ahead, "ahead", 2, space)
        assert (await sync_once(ahead, relay.url)).synced
        data = str(cli.path)
        code, stdout, stderr = await run_cli("sync", "--json", "--data", data, "--relay", relay.url, space)
        assert code == 0, stderr
        result = json.loads(stdout)
        assert result["synced"] is True
        assert [(n["by"], n["author"], n["seq"]) for n in result["held_back"]] == [
            ("this device", ahead.device_id, 1)]
        assert 2 * DAY_MS - 60_000 <= result["held_back"][0]["ahead_ms"] <= 2 * DAY_MS
        code, stdout, stderr = await run_cli("sync", "--data", data, "--relay", relay.url, space)
        assert code == 0, stderr
        assert "holds back" in stdout and ahead.device_id[:12] in stdout
        assert await rejections(relay.url, "clock-skew") == 0  # the relay took them
    async with running_relay(tmp_path / "strict-relay") as strict_relay:  # a day: it holds back
        assert (await sync_once(ahead, strict_relay.url)).synced
        assert await rejections(strict_relay.url, "clock-skew") == 1


def test_the_skew_setting_is_checked() -> None:
    for bad in ("0", "-1", "nan", str(400 * 24 * 3600)):
        with pytest.raises(ConfigError, match="max_clock_skew"):
            load_config({"max_clock_skew": bad}, environ={})
    assert load_config({}, environ={"CRDT_SYNC_RELAY_MAX_CLOCK_SKEW": "3600"}).max_clock_skew == 3600
    assert load_config({}, environ={}).max_clock_skew == DAY_MS / 1000


async def test_a_forged_envelope_from_the_future_is_refused_not_held(tmp_path: Path,
                                                                    open_replica: ReplicaFactory) -> None:
    """Holding back keeps state (the chain held, the notice): only for a genuine envelope.
    A forged signature with a clock far ahead is refused as forged, and nothing is held."""
    async with running_relay(tmp_path / "relay") as relay:
        mallory = admit(open_replica("mallory", seal_interval=0))
        fill(mallory, "m", 1)
        stranger = Identity.generate()
        env = seal(stranger, SPACE, 1, b"", YEAR_3000_MS << COUNTER_BITS, b"opaque")
        forged = WireEnvelope(stranger.public_key, 1, env.hlc, env.payload, bytes(64))

        async with RawPeer.open(relay.url, mallory) as raw:
            error = await raw.converse(lambda m: isinstance(m, Error), tamper=SwapEnvelopes(forged))
        assert isinstance(error, Error) and error.message.startswith("bad-signature: "), error
        assert not any(isinstance(m, ClockSkew) for m in raw.received)
        assert await rejections(relay.url, "clock-skew") == 0
