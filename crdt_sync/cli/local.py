"""The local commands: entities, spaces, status, bundles, the demo and the benchmark runner."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import NotFound
from .output import Output, UsageError, data_dir, parse_assignment, short, show


def cmd_init(args: argparse.Namespace, out: Output) -> None:
    path = data_dir(args.data)
    created = not (path / "store.sqlite3").exists()
    with open_replica(args) as replica:
        out.emit({"device": replica.device_id, "data": str(path), "created": created},
                 lambda: out.console.print(replica.device_id))


def cmd_put(args: argparse.Namespace, out: Output) -> None:
    fields = dict(parse_assignment(a) for a in args.fields)
    with open_replica(args) as replica:
        space = replica.space(args.space)
        space.put(args.collection, args.id, fields)
        result = space.get(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "fields": result}, lambda: _print_fields(out, result))


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        result = replica.space(args.space).get(args.collection, args.id)
        out.emit(result, lambda: _print_fields(out, result))


def _print_fields(out: Output, fields: dict[str, Any]) -> None:
    out.table(None, ["field", "value"], [(k, v) for k, v in fields.items()])


def cmd_list(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        rows = [{"collection": c, "id": i, "fields": f}
                for c, i, f in replica.space(args.space).rows(args.collection)]
        out.emit(rows, lambda: out.table(
            f"{args.space}: {len(rows)} entities", ["collection", "id", "fields"],
            [(r["collection"], r["id"], r["fields"]) for r in rows]))


def cmd_delete(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        replica.space(args.space).delete(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "deleted": True}, lambda: out.console.print(f"deleted {args.collection}/{args.id}"))


def cmd_history(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        changes = [h.to_dict() for h in replica.space(args.space).history(args.collection, args.id)]
        out.emit(changes, lambda: out.table(
            f"history of {args.collection}/{args.id}", ["time", "author", "changes"],
            [(c["time"], short(c["author"]), _describe(c)) for c in changes]))


def _describe(change: dict[str, Any]) -> str:
    parts = [f"{k}={show(v)}" for k, v in change["changes"].items()]
    parts += [f"-{k}" for k in change["removed"]]
    if "deleted" in change:
        parts.append("DELETED" if change["deleted"] else "revived")
    return ", ".join(parts) or "(no visible change)"


def cmd_conflicts(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        items = [c.to_dict() for c in replica.space(args.space).conflicts()]
        out.emit(items, lambda: out.table(
            f"conflicts in {args.space}: {len(items)}", ["entity", "field", "winner", "lost"],
            [(f"{c['collection']}/{c['id']}", c["field"], _entry(c["winner"]),
              "\n".join(_entry(e) for e in c["losers"])) for c in items]))


def _entry(entry: dict[str, Any]) -> str:
    value = show(entry["value"]) if entry["kind"] == "value" else f"({entry['kind']})"
    return f"{value} by {short(entry['author'])} at {entry['time']}"


def cmd_spaces(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        names = replica.spaces()
        out.emit({"spaces": names}, lambda: out.console.print("\n".join(names) or "(no spaces)"))


def cmd_join(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        replica.join(args.space)
        out.emit({"space": args.space, "joined": True}, lambda: out.console.print(f"joined {args.space}"))


def cmd_leave(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        replica.leave(args.space)
        out.emit({"space": args.space, "joined": False}, lambda: out.console.print(f"left {args.space}"))


def cmd_status(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        status = replica.status().to_dict()

    def human() -> None:
        out.console.print(f"device  {status['device']}\ndata    {status['data']}\n"
                          f"unsealed edits {status['unsealed']}, rejections {status['rejections']}")
        out.table("spaces", ["space", "version vector", "own envelopes no peer acknowledged"],
                  [(name, {short(a): s for a, s in info["version_vector"].items()},
                    str(info["unacknowledged"])) for name, info in status["spaces"].items()])
        out.table("peers (what each last acknowledged)", ["space", "peer", "synced", "behind by",
                                                          "acknowledged", "last seen"],
                  [(name, short(p["device"]), "yes" if p["synced"] else "no",
                    f"{p['behind']} envelopes", {short(a): s for a, s in p["version_vector"].items()},
                    p["seen"]) for name, info in status["spaces"].items() for p in info["peers"]])
        forks = [(name, short(f["author"]), str(f["seq"]), f["source"], f["since"])
                 for name, info in status["spaces"].items() for f in info["forks"]]
        if forks:
            out.table("forks (proven: each author excluded from that seq on; not liftable)",
                      ["space", "author", "from seq", "proof from", "since"], forks)

    out.emit(status, human)


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    from ..bundle import decode_bundle

    with open_replica(args) as replica:
        since: dict[str, int] = {}
        if args.since:
            since = _parse_vv(args.since)
        elif args.for_peer:
            since = replica.peer_version_vector(args.for_peer, args.space)
        data = replica.export_bundle(args.space, since)
    count = len(decode_bundle(data).envelopes)
    target = Path(args.out)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, target)  # never leave a half-written bundle under the real name
    out.emit({"space": args.space, "out": str(target), "envelopes": count, "bytes": len(data),
              "since": since},
             lambda: out.console.print(f"wrote {count} envelopes ({len(data)} bytes) of "
                                       f"{args.space} to {target}"))


def _parse_vv(text: str) -> dict[str, int]:
    try:
        value = json.loads(text)
    except ValueError:
        raise UsageError("--since takes a JSON version vector, e.g. '{\"<device>\": 12}'") from None
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise UsageError("--since takes a JSON object of device id to seq")
    return {str(k): int(v) for k, v in value.items()}


def cmd_import(args: argparse.Namespace, out: Output) -> None:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read bundle {args.file}: {exc.strerror}") from None
    with open_replica(args) as replica:
        result = replica.import_bundle(data, source=f"bundle {args.file}")
    out.emit({"space": result.space, "exporter": result.exporter, "applied": result.applied,
              "duplicates": result.duplicates, "forks": result.forks},
             lambda: out.console.print(f"imported {result.applied} envelopes into {result.space} "
                                       f"({result.duplicates} already here) from "
                                       f"{short(result.exporter)}" + (
                                           f"; {result.forks} fork(s) proven: each author is "
                                           f"excluded from its fork seq (crdt-sync status)"
                                           if result.forks else "")))


def cmd_demo(args: argparse.Namespace, out: Output) -> None:
    from .demo import run_demo

    run_demo(Path(args.dir) if args.dir else None, out.console, as_json=out.json)


def cmd_bench_merge(args: argparse.Namespace, out: Output) -> None:
    from crdt_sync.benchmarks.merge.runner import main as bench_merge

    code = bench_merge(args.options)
    if code:
        raise SystemExit(code)


def open_replica(args: argparse.Namespace) -> Any:
    from ..replica import Replica

    return Replica(data_dir(args.data))
