"""The LAN transport's pure parts: TXT bounds, tie-breaks, the bounded peer table."""

from __future__ import annotations

import pytest

from crdt_sync.transports.interface import SupportsSendNowait, send_nowait_of
from crdt_sync.transports.lan import (
    Candidate,
    PeerTable,
    TxtError,
    TxtRecord,
    dials,
    keeps,
    new_token,
    parse_txt,
)
from crdt_sync.transports.lan._peers import Retries
from crdt_sync.transports.memory import MemoryNetwork


def props(record: TxtRecord) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in record.properties().items()}


def test_txt_round_trip() -> None:
    record = TxtRecord((3,), new_token())
    assert parse_txt(props(record)) == record


@pytest.mark.parametrize(("change", "reason"), [
    ({b"txtvers": b"2"}, "txtvers"),
    ({b"txtvers": None}, "no value"),
    ({b"v": b"0"}, "1..65535"),
    ({b"v": b"3,3"}, "twice"),
    ({b"v": b",".join([b"1"] * 9)}, "at most 8"),
    ({b"v": b"x" * 65}, "at most 64"),
    ({b"t": b"ABCD" * 8}, "lowercase hex"),
    ({b"t": b"\xff" * 32}, "ASCII"),
    ({b"longerkey1": b"1"}, "key is"),
    ({f"k{i}".encode(): b"" for i in range(16)}, "keys"),
])
def test_txt_garbage_refused_with_reason(change: dict[bytes, bytes | None], reason: str) -> None:
    good = props(TxtRecord((3,), new_token()))
    with pytest.raises(TxtError, match=reason):
        parse_txt({**good, **change})


def test_missing_keys_refused() -> None:
    with pytest.raises(TxtError):
        parse_txt({})


def test_tie_breaks_agree() -> None:
    a, b = new_token(), new_token()
    assert dials(a, b) != dials(b, a)
    assert not dials(a, a)
    for outbound in (True, False):  # the same session seen from both ends
        assert keeps("dev-a", "dev-b", outbound) == keeps("dev-b", "dev-a", not outbound)


def test_flood_is_bounded_and_refusals_recorded() -> None:
    table = PeerTable(limit=8)
    for i in range(10_000):
        table.seen(Candidate(f"fake{i}", new_token(), ("10.0.0.1",), 1000 + i % 100, float(i)))
        table.refuse(f"fake{i}", "garbage")
    assert len(table) == 8 and table.evicted == 10_000 - 8
    assert len(table.refusals) == 32


def test_address_change_is_a_change() -> None:
    table = PeerTable()
    token = new_token()
    assert table.seen(Candidate("p", token, ("10.0.0.1",), 1, 0.0))
    assert not table.seen(Candidate("p", token, ("10.0.0.1",), 1, 1.0))
    assert table.seen(Candidate("p", token, ("10.0.0.2",), 1, 2.0))
    assert table.lost("p") is not None and len(table) == 0


def test_memory_links_offer_no_fast_path() -> None:
    network = MemoryNetwork(seed=0)
    a, _b = network.pair()
    assert send_nowait_of(a) is None or isinstance(a, SupportsSendNowait)
    network.close_all()


def test_the_txt_record_says_nothing_that_tracks_the_device(tmp_path: object) -> None:
    """What a stranger on the network reads: the versions and a token drawn anew at every
    start; no device id, no space."""
    from pathlib import Path

    from crdt_sync import Replica
    from crdt_sync.transports.lan import LanTransport

    with Replica(Path(str(tmp_path)) / "d") as replica:
        replica.space("site-42")
        first, second = (LanTransport(replica, ["127.0.0.1"], mdns=False) for _ in range(2))
        assert first.token != second.token
        properties = TxtRecord((3,), first.token).properties()
        assert set(properties) == {"txtvers", "v", "t"}
        text = "".join(properties.values())
        assert replica.device_id not in text and "site-42" not in text


def test_a_flood_of_failing_fakes_evicts_them_before_a_peer_that_answered() -> None:
    table = PeerTable(limit=8)
    table.seen(Candidate("real", new_token(), ("10.0.0.1",), 1, 0.0))
    for i in range(1000):
        name = f"fake{i}"
        table.seen(Candidate(name, new_token(), ("10.0.0.2",), 2, float(i + 1)))
        table.failed(name)  # nothing listens there
    assert table.get("real") is not None and len(table) == 8
    token = new_token()
    table.seen(Candidate("p", token, ("10.0.0.3",), 3, 0.0))
    table.failed("p")
    table.seen(Candidate("p", token, ("10.0.0.3",), 3, 1.0))  # refreshed: its failures stay
    assert table.get("p") is not None and table.get("p").failures == 1  # type: ignore[union-attr]


def test_retries_double_their_delay_give_up_and_stay_bounded() -> None:
    retries: Retries[int] = Retries(limit=4, first=1.0, attempts=3)
    retries.fail("x", 0.0)
    assert retries.due(0.5) == [] and retries.due(1.0) == [("x", None)]  # None: resolve again
    assert retries.due(100.0) == []  # handed out: not due again until it fails again
    retries.fail("x", 10.0, 7)  # now with somewhere to dial
    assert retries.due(11.9) == [] and retries.due(12.0) == [("x", 7)]
    retries.fail("x", 20.0)  # the target stays
    assert retries.due(24.0) == [("x", 7)]
    retries.fail("x", 30.0)  # a fourth failure: given up
    assert "x" not in retries and retries.given_up == 1
    for i in range(10):
        retries.fail(f"n{i}", 0.0)
    assert len(retries) == 4 and retries.given_up == 1 + 6
    retries.forget("n9")
    assert "n9" not in retries
