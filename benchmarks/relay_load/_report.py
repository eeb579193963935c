"""The relay load benchmark's output: its tables, verdicts and profiles, or its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from importlib import metadata
from typing import Any

from .._harness import make_console, print_json, print_machine, print_table
from ._load import Load, load_dict


# -- output --------------------------------------------------------------------------------------
def _fmt_ms(v: float | None) -> str:
    return "> drain" if v is None else (f"{v:.1f}" if v < 100 else f"{v:,.0f}")


def _fmt_pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f} %"


HEADERS = ["server", "typing /s", "conns", "offered /s", "accepted /s", "delivered /s", "expected /s",
           "delivered", "p50 ms", "p99 ms", "typing p99", "team p99", "ack p99", "RSS MB", "CPU %", "errors"]
DETAIL_HEADERS = ["server", "typing /s", "connect s", "idle CPU %", "idle RSS MB", "accepted", "duplicates",
                  "server CPU µs/delivery", "generator CPU %", "others' CPU %", "sched lag p99 ms"]


def _rows(results: list[dict[str, Any]]) -> tuple[list[list[str]], list[list[str]]]:
    rows, details = [], []
    for r in results:
        lat = r["latency_ms"]
        rate = f"{r['typing_rate']:g}"
        rows.append([r["name"], rate, f"{r['established']:,}/{r['connections']:,}",
                     f"{r['offered_per_s']:,.0f}", f"{r['accepted_per_s']:,.0f}",
                     f"{r['delivered_per_s']:,.0f}", f"{r['expected_deliveries_per_s']:,.0f}",
                     _fmt_pct(r["delivered_fraction"]), _fmt_ms(lat["all"]["p50"]),
                     _fmt_ms(lat["all"]["p99"]),
                     _fmt_ms(lat["typing"]["p99"]), _fmt_ms(lat["team"]["p99"]), _fmt_ms(r["ack_ms"]["p99"]),
                     f"{r['rss_peak_mb']:.0f}", f"{r['cpu_window_pct']:.0f}", str(sum(r["errors"].values()))])
        details.append([r["name"], rate, f"{r['connect_s']:.1f}", f"{r['cpu_idle_pct']:.1f}",
                        f"{r['rss_idle_mb']:.0f}", _fmt_pct(r["accepted_fraction"]), str(r["duplicates"]),
                        f"{r['cpu_us_per_delivery']:.0f}",
                        f"{r['generator_cpu_pct']:.0f}", f"{r['others_cpu_pct']:.0f}",
                        _fmt_ms(r["ticker_lag_p99_ms"])])
    return rows, details


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("crdt-sync", "pycrdt", "pycrdt-websocket", "uvicorn", "websockets", "aiohttp", "cbor2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def report(args: argparse.Namespace, loads: list[Load], results: list[dict[str, Any]]) -> None:
    payload = {"benchmark": "relay_load", "loads": [load_dict(load) for load in loads],
               "generators": args.generators, "versions": _versions(), "results": results}
    if args.save is not None:
        args.save.write_text(json.dumps(payload, indent=2))
    if args.json:
        print_json(payload)
        return
    console = make_console()
    load = loads[0]
    teams = sum(1 for s in load.spaces() if s[1] == "team")
    rates = "/".join(f"{x.typing_rate:g}" for x in loads)
    typing = (f"{load.typing_devices} typing at {rates} edits/s in one space" if load.typing_devices
              else "no typing space")
    title = (f"relay load: {load.devices:,} devices; {typing}; "
             f"{load.devices - load.typing_devices:,} in {teams:,} teams of ~{load.team_size} "
             f"at {load.team_rate:g}/s; {load.duration:g} s measured after {load.warmup:g} s warm-up")
    rows, details = _rows(results)
    print_table(console, title, HEADERS, rows)
    print_table(console, "details", DETAIL_HEADERS, details)
    print_machine(console)
    console.print("[dim]" + ", ".join(f"{k} {v}" for k, v in _versions().items()) + "[/dim]")
    for r in results:
        for kind, n in r["errors"].items():
            console.print(f"[yellow]{r['name']}: {n} x {kind}[/yellow] (e.g. {r['error_examples'][kind]})")
    for rate in dict.fromkeys(r["typing_rate"] for r in results):
        ours = next((r for r in results if r["server"] == "crdt-sync" and r["typing_rate"] == rate), None)
        theirs = next((r for r in results if r["server"] == "pycrdt-websocket" and r["typing_rate"] == rate),
                      None)
        if ours and theirs:
            p99 = ((ours["latency_ms"]["all"]["p99"] or math.inf)
                   < (theirs["latency_ms"]["all"]["p99"] or math.inf))
            both_kept_up = min(ours["delivered_fraction"], theirs["delivered_fraction"]) >= 0.999
            tput: bool | None = None if both_kept_up else ours["delivered_per_s"] > theirs["delivered_per_s"]
            for what, ok in (("throughput (delivered env/s)", tput), ("p99 delivery latency", p99)):
                verdict = ("even: both delivered every edit" if ok is None
                           else "[green]ahead[/green]" if ok else "[red]behind[/red]")
                console.print(f"target at {rate:g} typing edits/s: crdt-sync relay ahead of pycrdt-websocket "
                              f"on {what}: {verdict}")
    for r in results:
        prof = r.get("profile")
        if prof:
            console.print(f"\n[bold]{r['name']} profile[/bold] ({args.profile}, measured window)")
            print_table(console, "self time", ["function", "%"], [[f, f"{p}"] for f, p in prof["self"]])
            if "inclusive" in prof:
                print_table(console, "inclusive time", ["function", "%"],
                            [[f, f"{p}"] for f, p in prof["inclusive"]])
