"""One server's measurements: the generators' counts merged with the server's samples, and
the profiles summarised.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from ._load import SERVERS, Histogram, Load
from ._servers import Sampler


def _ms(seconds: float) -> float | None:
    return None if math.isinf(seconds) or math.isnan(seconds) else round(seconds * 1000, 2)


def summarise(server: str, load: Load, results: list[dict[str, Any]], sampler: Sampler, hwm: float,
               t_go: float, quiet: float) -> dict[str, Any]:
    lat = {"typing": Histogram(), "team": Histogram()}
    ack, lags = Histogram(), Histogram()
    expected = {"typing": 0, "team": 0}
    delivered = {"typing": 0, "team": 0}
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for r in results:
        for kind in lat:
            lat[kind].merge(Histogram.from_json(r["latency"][kind]))
            expected[kind] += r["expected"][kind]
            delivered[kind] += r["delivered_window_edits"][kind]
        ack.merge(Histogram.from_json(r["ack"]))
        lags.merge(Histogram.from_json(r["ticker_lag"]))
        errors.update(r["errors"])
        for k, v in r["error_examples"].items():
            examples.setdefault(k, v)
    both = Histogram()
    for h in lat.values():
        both.merge(h)
    total_expected = sum(expected.values())
    sent = sum(r["sent"] for r in results)
    window = (t_go + load.warmup, t_go + load.end)
    d = load.duration
    generator_pct = 100 * sum(r["cpu_window_s"] for r in results) / d
    idle_lo = max(r["t_connect"] for r in results) if results else t_go
    connect_end = max(r["t_connect"] + r["connect_s"] for r in results)
    return {
        "server": server, "name": SERVERS[server],
        "connections": sum(r["devices"] for r in results),
        "established": sum(r["established"] for r in results),
        "connect_s": round(max(r["connect_s"] for r in results), 2),
        "prepare_s": round(max(r["prepare_s"] for r in results), 2),
        "offered_per_s": sum(r["offered"] for r in results) / d,
        "sent_per_s": sent / d,
        "accepted_per_s": sum(r["accepted_in_window"] for r in results) / d,
        "accepted_fraction": sum(r["accepted_window_edits"] for r in results) / sent if sent else math.nan,
        "expected_deliveries_per_s": total_expected / d,
        "delivered_per_s": sum(r["delivered_in_window"] for r in results) / d,
        "delivered_fraction": sum(delivered.values()) / total_expected if total_expected else math.nan,
        "expected": expected, "delivered": delivered,
        "latency_ms": {
            "all": {"p50": _ms(both.quantile(0.5, total_expected)),
                    "p99": _ms(both.quantile(0.99, total_expected))},
            **{k: {"p50": _ms(h.quantile(0.5, expected[k])), "p99": _ms(h.quantile(0.99, expected[k]))}
               for k, h in lat.items()}},
        "ack_ms": {"p50": _ms(ack.quantile(0.5, sent)), "p99": _ms(ack.quantile(0.99, sent))},
        "duplicates": sum(r["duplicates"] for r in results),
        "rss_peak_mb": round(max(sampler.rss_mb(0, math.inf), hwm if not math.isnan(hwm) else 0), 1),
        "rss_idle_mb": round(sampler.rss_mb(connect_end, t_go, pick=max), 1),
        "rss_end_mb": round(sampler.rss_mb(window[0], window[1], pick=lambda xs: xs[-1]), 1),
        "cpu_idle_pct": round(sampler.cpu_percent(max(idle_lo, connect_end) + 0.3, t_go), 1),
        "cpu_window_pct": round(sampler.cpu_percent(*window), 1),
        # CPU time per delivery: what the load costs the server, whatever else runs on the machine
        "cpu_us_per_delivery": round(sampler.cpu_percent(*window) / 100 * d * 1e6
                                     / max(1, sum(r["delivered_in_window"] for r in results)), 1),
        "generator_cpu_pct": round(generator_pct, 1),
        "others_cpu_pct": round(sampler.machine_percent(*window) - sampler.cpu_percent(*window)
                                - generator_pct, 1),
        "machine_before_pct": round(quiet, 1),
        "ticker_lag_p99_ms": _ms(lags.quantile(0.99)),
        "errors": dict(errors), "error_examples": examples,
    }


def summarise_py_spy(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return {"samples": total,
            "self": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)] if total else [],
            "inclusive": [(f, round(100 * c / total, 1)) for f, c in inclusive.most_common(top * 2)]
            if total else []}


def _frame_name(frame: str) -> str:
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker_ in ("site-packages/", "lib/python3.11/", "/main/"):
        if marker_ in where:
            where = where.split(marker_, 1)[1]
    return f"{name} ({where})"


def summarise_cprofile(path: Path, top: int = 25) -> dict[str, Any]:
    import pstats

    st = pstats.Stats(str(path))
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(v[2] for v in st.stats.values()) or 1.0  # type: ignore[attr-defined]
    return {"self": [(f"{fn[2]} ({fn[0].split('/main/')[-1]}:{fn[1]})", round(100 * v[2] / total, 1))
                     for fn, v in rows[:top]]}
