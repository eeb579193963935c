"""The BLE link model (transports/ble/model.py): its arithmetic, and its calibration against the
published figures it was fitted to (never to runs here)."""

from __future__ import annotations

from crdt_sync.benchmarks.ble import run
from crdt_sync.transports.ble import chunk_size_for
from crdt_sync.transports.ble.model import GATT_23_1M, GATT_185_IOS, GATT_247_2M, GATT_517_2M, L2CAP_IOS


def test_chunks_fill_whole_link_layer_packets() -> None:
    assert GATT_23_1M.ll_pdus(20) == [27]  # 20 + ATT 3 + L2CAP 4: one 27-byte packet
    assert GATT_247_2M.ll_pdus(244) == [251]
    assert chunk_size_for(517, 251) == 495 and GATT_517_2M.ll_pdus(495) == [251, 251]
    assert chunk_size_for(517) == 512 and GATT_517_2M.ll_pdus(512) == [251, 251, 17]
    assert L2CAP_IOS.chunk == 492 and L2CAP_IOS.ll_pdus(492) == [251, 251]


def test_calibration_matches_the_published_figures() -> None:
    big = [bytes(16_000)] * 20
    assert 4_000 <= GATT_185_IOS.cost(big).goodput <= 7_000  # Ditto, GATT on iOS: ~5 KB/s
    assert 18_000 <= L2CAP_IOS.cost(big).goodput <= 26_000  # Ditto, L2CAP on iOS: ~22 KB/s
    assert 300_000 / 8 <= GATT_247_2M.cost(big).goodput <= 400_000 / 8 * 1.05  # iPhone, 2M PHY


def test_batched_frames_reach_the_goodput_target() -> None:
    big = GATT_247_2M.cost([bytes(16_000)] * 20)
    assert big.fraction >= 0.8 and L2CAP_IOS.cost([bytes(16_000)] * 20).fraction >= 0.8
    small = GATT_247_2M.cost([bytes(120)] * 100)  # one small frame per update: header-bound
    assert small.fraction < 0.6


def test_the_benchmark_runs_on_a_small_space() -> None:
    result = run(entities=60, day=5)
    assert result["framing"] and result["runs"] and result["rates"]
    assert all(row["frame_bytes"] > 0 and row["air_bytes"] > row["frame_bytes"] for row in result["runs"])
