"""Issue 14's local-storage figures: the query index, reopen after typing, ``list --json`` memory.

    python -m crdt_sync.benchmarks.local_store [--entities N] [--keystrokes N] [--list N ...]

- index: a field-like space of ``--entities`` entities, each with a few scalars and a 1 KiB
  photo (bytes) and a 2 KiB note (a long string); the bytes of the ``fields`` table (the
  value index) and of the whole store.
- reopen: one text field typed ``--keystrokes`` characters, sealed every ``--per-seal``
  keystrokes (the patterns a person's typing leaves), closed; then a fresh process opens the
  directory and reads the text: its wall time from ``Replica(...)`` to the text in hand.
- list: ``crdt-sync list --json`` of spaces of each ``--list`` size: the child's peak RSS.

Each measurement runs in its own process (peak RSS is per process: VmHWM).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from ._harness import dir_size, machine_info

MODULE = "crdt_sync.benchmarks.local_store"
SPACE, COLLECTION = "field", "assets"


def fields_of(k: int) -> dict[str, Any]:
    return {"site": k % 100, "ok": k % 7 != 0, "serial": f"SN-{k:08d}",
            "photo": bytes([k % 256]) * 1024, "note": "n" * 2048}


def create(data: Path, entities: int, photos: bool = True, batch: int = 1000) -> None:
    from crdt_sync import Replica

    with Replica(data) as replica:
        space = replica.create_space(SPACE)
        for lo in range(0, entities, batch):
            with space.transaction() as tx:
                for k in range(lo, min(entities, lo + batch)):
                    f = fields_of(k)
                    if not photos:
                        f = {"site": f["site"], "ok": f["ok"], "serial": f["serial"]}
                    tx.put(COLLECTION, f"a-{k:06d}", f)


def index_figures(data: Path) -> dict[str, Any]:
    db = sqlite3.connect(data / "store.sqlite3")
    try:
        rows, value_bytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM fields").fetchone()
        try:
            pages = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.OperationalError:  # SQLite built without dbstat
            pages = {}
    finally:
        db.close()
    return {"index_rows": rows, "index_value_bytes": value_bytes,
            "fields_table_bytes": pages.get("fields"), "fields_index_bytes": pages.get("fields_value"),
            "store_bytes": dir_size(data)}


def type_text(data: Path, keystrokes: int, per_seal: int) -> None:
    from crdt_sync import Replica

    with Replica(data) as replica:
        space = replica.create_space(SPACE)
        for k in range(keystrokes):
            with space.transaction() as tx:
                tx.entity("docs", "d1").text("body").insert(k, "abcdefghij"[k % 10])
            if (k + 1) % per_seal == 0:
                replica.seal()


def reopen(data: Path, repeat: int = 5) -> dict[str, Any]:
    """Open and read the text ``repeat`` times (imports done first): median and min."""
    import pycrdt  # noqa: F401  (imported before timing, as an app has)

    from crdt_sync import Replica

    times = []
    for _ in range(repeat):
        t0 = perf_counter()
        replica = Replica(data)
        text = replica.space(SPACE).get("docs", "d1")["body"]
        times.append(perf_counter() - t0)
        replica.close()
    times.sort()
    return {"reopen_s": times[len(times) // 2], "reopen_min_s": times[0], "chars": len(text)}


def _child(argv: list[str]) -> dict[str, Any]:
    mode, data = argv[0], Path(argv[1])
    if mode == "create":
        create(data, int(argv[2]), photos=argv[3] == "1")
        return {}
    if mode == "type":
        type_text(data, int(argv[2]), int(argv[3]))
        return {}
    if mode == "reopen":
        return reopen(data)
    raise SystemExit(f"unknown mode {mode}")


def _run(*argv: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", MODULE, "--child", *argv], check=True,
                         capture_output=True, text=True, env=os.environ.copy())
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def list_json_peak_mb(data: Path) -> float:
    """Peak RSS (MiB) of ``crdt-sync list --json`` on ``data``, with its output discarded."""
    code = ("import sys; from crdt_sync.cli.main import main; "
            "rc = main(['--data', sys.argv[1], '--json', 'list', sys.argv[2]]); "
            "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0], file=sys.stderr); "
            "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(data), SPACE], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, check=True, env=os.environ.copy())
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "--child":
        print(json.dumps(_child(args_list[1:])))
        return 0
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=10_000)
    p.add_argument("--keystrokes", type=int, default=5000)
    p.add_argument("--per-seal", type=int, nargs="*", default=[1, 50, 500])
    p.add_argument("--list", type=int, nargs="*", default=[2000, 20000])
    p.add_argument("--skip", nargs="*", default=[], choices=["index", "reopen", "list"])
    args = p.parse_args(args_list)
    report: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        if "index" not in args.skip:
            data = Path(tmp) / "index"
            _run("create", str(data), str(args.entities), "1")
            report["index"] = {"entities": args.entities, **index_figures(data)}
            print(json.dumps(report["index"]), file=sys.stderr)
        if "reopen" not in args.skip:
            report["reopen"] = []
            for per_seal in args.per_seal:
                data = Path(tmp) / f"type-{per_seal}"
                _run("type", str(data), str(args.keystrokes), str(per_seal))
                got = _run("reopen", str(data))
                got = {"keystrokes": args.keystrokes, "per_seal": per_seal, **got}
                report["reopen"].append(got)
                print(json.dumps(got), file=sys.stderr)
        if "list" not in args.skip:
            report["list"] = []
            for n in args.list:
                data = Path(tmp) / f"list-{n}"
                _run("create", str(data), str(n), "0")
                got2 = {"entities": n, "peak_rss_mib": round(list_json_peak_mb(data), 1)}
                report["list"].append(got2)
                print(json.dumps(got2), file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
