"""The sync benchmark's output (:mod:`benchmarks.sync`): its tables, the issue's targets, or its
JSON.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from ._flights import HANDSHAKE, SyncRun, YSync
from ._harness import Target, make_console, print_json, print_machine, print_table, print_targets

#: The issue's targets.
TARGET_ROUND_TRIPS = 2.0
TARGET_EDIT_BYTES = 399  # "one edit in under 400 bytes"
KIB = 1024
VARIANTS = {"each": "one envelope per change", "together": "one transaction, one envelope"}


# -- report --------------------------------------------------------------------------------
def _t(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _n(value: int) -> str:
    return f"{value:,}"


def _our_row(label: str, r: SyncRun) -> list[str]:
    return [label, f"{r.sync_round_trips:g} ({r.round_trips:g})", _n(r.a_to_b), _n(r.b_to_a),
            _n(r.total), _n(sum(r.frames.values())), _t(r.seconds)]


def _space_tables(console: Console, s: dict[str, Any]) -> None:
    runs = {v: SyncRun.from_dict(s["sync"][v]) for v in VARIANTS}
    y = YSync.from_dict(s["yjs"])
    rows = [_our_row(f"crdt-sync, {VARIANTS[v]}", r) for v, r in runs.items()]
    rows += [[f"Yjs per doc ({y.docs:,}), one way", "1", _n(y.step2_a), _n(y.step1_b), _n(y.one_way),
              _n(2 * y.docs), _t(y.one_way_seconds)],
             [f"Yjs per doc ({y.docs:,}), both ways", "1", _n(y.a_to_b), _n(y.b_to_a),
              _n(y.a_to_b + y.b_to_a), _n(4 * y.docs), _t(y.seconds)]]
    print_table(console, f"A. {s['entities']:,} entities on A and B, {s['changes']} changed on A: sync",
                ["method", "round trips after handshake (total)", "A→B bytes", "B→A bytes", "total bytes",
                 "frames / messages", "time"], rows)
    console.print("[dim]Yjs one way: B sends SyncStep1 per document, A answers SyncStep2; both ways: "
                  "also A's SyncStep1 and B's answer, as y-websocket. Each message carries the document "
                  "name. Yjs time: protocol work only, documents already in memory.[/dim]")
    console.print(f"raw Yjs updates of the {s['changes']} changes: {s['raw_change_bytes']:,} B "
                  f"(our entity documents); {s['sync']['plain_yjs_bytes']:,} B as plain Y.Map updates")
    print_table(console, "A. where crdt-sync's bytes go (both directions)",
                ["variant", "handshake", "HAVE+ACK+BYE", "Yjs updates", "payload framing + HLCs",
                 "signatures", "other envelope fields"], [_breakdown(v, r) for v, r in runs.items()])


def _breakdown(variant: str, r: SyncRun) -> list[str]:
    handshake = sum(r.type_bytes.get(t, 0) for t in HANDSHAKE)
    control = sum(r.type_bytes.get(t, 0) for t in ("HAVE", "ACK", "BYE"))
    signatures = 64 * r.envelopes
    other = r.type_bytes.get("ENVELOPES", 0) - r.payload_bytes - signatures
    return [VARIANTS[variant], _n(handshake), _n(control), _n(r.yjs_bytes), _n(r.payload_bytes - r.yjs_bytes),
            _n(signatures), _n(other)]


def _trace_table(console: Console, t: dict[str, Any]) -> None:
    rows = []
    for k in t["behind"]:
        for mode, label in (("cold", "crdt-sync, B just opened"), ("warm", "crdt-sync, document open on B")):
            r = SyncRun.from_dict(t["sync"][f"{k}-{mode}"])
            rows.append([_n(k), label, _n(r.envelopes), _n(r.a_to_b_sync), _n(r.b_to_a_sync),
                         _n(r.sync_total), f"{r.sync_round_trips:g}", _t(r.seconds)])
        y = YSync.from_dict(t["yjs"][str(k)])
        rows.append([_n(k), "y-protocols, both ways", "-", _n(y.a_to_b), _n(y.b_to_a),
                     _n(y.a_to_b + y.b_to_a), "1", _t(y.seconds)])
    print_table(console, f"B. catch-up on automerge-paper ({t['edits']:,} edits), B k edits behind; "
                         "bytes after the handshake",
                ["k", "method", "envelopes", "A→B bytes", "B→A bytes", "total bytes", "round trips", "time"],
                rows)


def _load(values: Sequence[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values)


def _setup_table(console: Console, results: dict[str, Any]) -> None:
    rows = []
    if "space" in results:
        s = results["space"]
        seed = SyncRun.from_dict(s["seed"])
        rows += [[f"A: create {s['entities']:,} entities", _t(s["create"]["seconds"]),
                  f"{s['create']['disk_bytes'] / 2**20:.0f} MiB on disk"],
                 ["B: first full sync of the space", _t(seed.seconds),
                  f"{seed.total:,} B, {seed.envelopes:,} envelopes, {seed.sync_round_trips:g} round trips"]]
    if "trace" in results:
        t = results["trace"]
        seed = SyncRun.from_dict(t["seed"])
        rows += [[f"A: replay {t['replay']['edits']:,} edits", _t(t["replay"]["seconds"]), ""],
                 ["B: first full sync of the document", _t(seed.seconds),
                  f"{seed.total:,} B, {seed.envelopes:,} envelopes, {seed.sync_round_trips:g} round trips"]]
    print_table(console, "setup (for reference, not compared)", ["step", "time", "notes"], rows)


def targets(results: dict[str, Any]) -> list[Target]:
    out = []
    if "space" in results:
        s = results["space"]
        raw, plain = s["raw_change_bytes"], s["sync"]["plain_yjs_bytes"]
        for v in VARIANTS:
            r = SyncRun.from_dict(s["sync"][v])
            out += [Target(f"A ({VARIANTS[v]}): round trips after the handshake", r.sync_round_trips,
                           TARGET_ROUND_TRIPS, "round trips"),
                    Target(f"A ({VARIANTS[v]}): bytes <= 2 x raw Yjs updates + 1 KiB", r.total,
                           2 * raw + KIB, "B"),
                    Target(f"A ({VARIANTS[v]}): bytes <= 2 x plain Y.Map updates + 1 KiB (stricter)",
                           r.total, 2 * plain + KIB, "B")]
    if "trace" in results and "1-cold" in results["trace"]["sync"]:
        r = SyncRun.from_dict(results["trace"]["sync"]["1-cold"])
        out.append(Target("B: one edit, bytes after the handshake, both ways", r.sync_total,
                          TARGET_EDIT_BYTES, "B"))
    return out


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    goals = targets(results)
    if args.json:
        print_json({"benchmark": "sync", **results, "targets": [t.as_dict() for t in goals]})
        return
    console = make_console()
    if "space" in results:
        _space_tables(console, results["space"])
    if "trace" in results:
        _trace_table(console, results["trace"])
    _setup_table(console, results)
    if "load_average" in results:
        load = results["load_average"]
        console.print(f"[dim]load average (1, 5, 15 min) at the start of the run {_load(load['start'])}, "
                      f"at the end {_load(load['end'])}[/dim]")
    print_machine(console)
    print_targets(console, goals)
