"""The ``crdt-sync`` command: the composition root.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 5 rejected input. Errors go to stderr, as
``{"error": {"code": N, "kind": ..., "message": ...}}`` under ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from .errors import CrdtSyncError, NotFound, Rejected, StoreError, ValueRejected
from .values import from_json, to_json

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REJECTED = 0, 1, 2, 3, 5
ENV_DATA = "CRDT_SYNC_DATA"


class UsageError(CrdtSyncError):
    """The command line itself is wrong."""


def data_dir(explicit: str | None) -> Path:
    """``--data``, else ``$CRDT_SYNC_DATA``, else the user data directory."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA])
    from platformdirs import user_data_dir

    return Path(user_data_dir("crdt-sync", appauthor=False))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value``: a value that parses as JSON is JSON (bytes as {"$bytes": base64}), else a str."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"expected key=value, got {text!r}")
    try:
        value = from_json(json.loads(raw))
    except (ValueError, TypeError):
        value = raw
    return key, value


class Output:
    """Prints results as JSON (``--json``) or for people (rich)."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        from rich.console import Console

        self.console = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        if self.json:
            print(json.dumps(to_json(data), ensure_ascii=False, sort_keys=False))
        elif human is not None:
            human()
        else:
            self.console.print_json(json.dumps(to_json(data), ensure_ascii=False))

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell if isinstance(cell, str) else _show(cell) for cell in row))
        self.console.print(table)

    def fail(self, code: int, kind: str, message: str) -> NoReturn:
        if self.json:
            print(json.dumps({"error": {"code": code, "kind": kind, "message": message}}),
                  file=sys.stderr)
        else:
            self.err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
        raise SystemExit(code)


def _show(value: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False)


def _short(device: str) -> str:
    return device[:12]


# -- commands -------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace, out: Output) -> None:
    path = data_dir(args.data)
    created = not (path / "store.sqlite3").exists()
    with _open(args) as replica:
        out.emit({"device": replica.device_id, "data": str(path), "created": created},
                 lambda: out.console.print(replica.device_id))


def cmd_put(args: argparse.Namespace, out: Output) -> None:
    fields = dict(parse_assignment(a) for a in args.fields)
    with _open(args) as replica:
        space = replica.space(args.space)
        space.put(args.collection, args.id, fields)
        result = space.get(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "fields": result}, lambda: _print_fields(out, result))


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        result = replica.space(args.space).get(args.collection, args.id)
        out.emit(result, lambda: _print_fields(out, result))


def _print_fields(out: Output, fields: dict[str, Any]) -> None:
    out.table(None, ["field", "value"], [(k, v) for k, v in fields.items()])


def cmd_list(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        rows = [{"collection": c, "id": i, "fields": f}
                for c, i, f in replica.space(args.space).rows(args.collection)]
        out.emit(rows, lambda: out.table(
            f"{args.space}: {len(rows)} entities", ["collection", "id", "fields"],
            [(r["collection"], r["id"], r["fields"]) for r in rows]))


def cmd_delete(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        replica.space(args.space).delete(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "deleted": True}, lambda: out.console.print(f"deleted {args.collection}/{args.id}"))


def cmd_history(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        changes = replica.space(args.space).history(args.collection, args.id)
        out.emit(changes, lambda: out.table(
            f"history of {args.collection}/{args.id}", ["time", "author", "changes"],
            [(c["time"], _short(c["author"]), _describe(c)) for c in changes]))


def _describe(change: dict[str, Any]) -> str:
    parts = [f"{k}={_show(v)}" for k, v in change["changes"].items()]
    parts += [f"-{k}" for k in change["removed"]]
    if "deleted" in change:
        parts.append("DELETED" if change["deleted"] else "revived")
    return ", ".join(parts) or "(no visible change)"


def cmd_conflicts(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        items = replica.space(args.space).conflicts()
        out.emit(items, lambda: out.table(
            f"conflicts in {args.space}: {len(items)}", ["entity", "field", "winner", "lost"],
            [(f"{c['collection']}/{c['id']}", c["field"], _entry(c["winner"]),
              "\n".join(_entry(e) for e in c["losers"])) for c in items]))


def _entry(entry: dict[str, Any]) -> str:
    value = _show(entry["value"]) if entry["kind"] == "value" else f"({entry['kind']})"
    return f"{value} by {_short(entry['author'])} at {entry['time']}"


def cmd_spaces(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        names = replica.spaces()
        out.emit({"spaces": names}, lambda: out.console.print("\n".join(names) or "(no spaces)"))


def cmd_join(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        replica.join(args.space)
        out.emit({"space": args.space, "joined": True}, lambda: out.console.print(f"joined {args.space}"))


def cmd_leave(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        replica.leave(args.space)
        out.emit({"space": args.space, "joined": False}, lambda: out.console.print(f"left {args.space}"))


def cmd_status(args: argparse.Namespace, out: Output) -> None:
    with _open(args) as replica:
        status = replica.status()

    def human() -> None:
        out.console.print(f"device  {status['device']}\ndata    {status['data']}\n"
                          f"unsealed edits {status['unsealed']}, rejections {status['rejections']}")
        out.table("spaces", ["space", "version vector", "own envelopes no peer acknowledged"],
                  [(name, {_short(a): s for a, s in info["version_vector"].items()},
                    str(info["unacknowledged"])) for name, info in status["spaces"].items()])
        out.table("peers (what each last acknowledged)", ["space", "peer", "synced", "behind by",
                                                          "acknowledged", "last seen"],
                  [(name, _short(p["device"]), "yes" if p["synced"] else "no",
                    f"{p['behind']} envelopes", {_short(a): s for a, s in p["version_vector"].items()},
                    p["seen"]) for name, info in status["spaces"].items() for p in info["peers"]])

    out.emit(status, human)


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    from .bundle import decode_bundle

    with _open(args) as replica:
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
    with _open(args) as replica:
        result = replica.import_bundle(data, source=f"bundle {args.file}")
    out.emit({"space": result.space, "exporter": result.exporter, "applied": result.applied,
              "duplicates": result.duplicates},
             lambda: out.console.print(f"imported {result.applied} envelopes into {result.space} "
                                       f"({result.duplicates} already here) from "
                                       f"{_short(result.exporter)}"))


def cmd_demo(args: argparse.Namespace, out: Output) -> None:
    from .demo import run_demo

    run_demo(Path(args.dir) if args.dir else None, out.console, as_json=out.json)


def cmd_bench_merge(args: argparse.Namespace, out: Output) -> None:
    from benchmarks.merge.runner import main as bench_merge

    code = bench_merge(args.options)
    if code:
        raise SystemExit(code)


def cmd_relay(args: argparse.Namespace, out: Output) -> None:
    from .cli_net import run_relay

    run_relay(args, out)


def cmd_sync(args: argparse.Namespace, out: Output) -> None:
    from .cli_net import run_sync

    run_sync(args, out, live=False)


def cmd_peer(args: argparse.Namespace, out: Output) -> None:
    from .cli_net import run_sync

    run_sync(args, out, live=True)


def _open(args: argparse.Namespace) -> Any:
    from .replica import Replica

    return Replica(data_dir(args.data))


# -- the parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"data directory (default: ${ENV_DATA}, else the user data directory)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    parser = argparse.ArgumentParser(
        prog="crdt-sync", parents=[common],
        description="Offline-first sync engine for field teams. Exit codes: 0 ok, 1 error, "
                    "2 usage, 3 not found, 5 rejected input.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace, Output], None],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    command("init", cmd_init, "create the data directory if needed and print the device id")
    p = command("put", cmd_put, "merge fields into an entity, creating it")
    _entity_args(p)
    p.add_argument("fields", nargs="+", metavar="key=value",
                   help='a value that parses as JSON is JSON (bytes: {"$bytes": "<base64>"}), else a string')
    _entity_args(command("get", cmd_get, "print an entity's fields"))
    p = command("list", cmd_list, "list the live entities of a space")
    p.add_argument("space")
    p.add_argument("collection", nargs="?")
    _entity_args(command("delete", cmd_delete, "delete an entity (a tombstone that merges)"))
    _entity_args(command("history", cmd_history, "who changed what, when"))
    command("conflicts", cmd_conflicts, "fields whose concurrent writes lost").add_argument("space")
    command("spaces", cmd_spaces, "the spaces this device keeps")
    command("join", cmd_join, "keep and sync a space").add_argument("space")
    command("leave", cmd_leave, "stop keeping a space (its data stays)").add_argument("space")
    command("status", cmd_status, "device, spaces, version vectors, what peers acknowledged")
    p = command("export", cmd_export, "write a bundle of a space for another device")
    p.add_argument("space")
    p.add_argument("--out", required=True, metavar="FILE")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--since", metavar="JSON", help="only what this version vector lacks")
    group.add_argument("--for", dest="for_peer", metavar="DEVICE",
                       help="only what DEVICE lacks, as far as this device knows")
    command("import", cmd_import, "verify and apply a bundle, all or nothing").add_argument("file")
    from .cli_net import add_commands

    add_commands(sub, common)
    command("demo", cmd_demo, "three simulated field devices edit offline and converge") \
        .add_argument("--dir", help="keep the devices' data directories here")
    bench = sub.add_parser("bench", help="benchmarks (the bench extra)", description="benchmarks")
    p = bench.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK").add_parser(
        "merge", help="CRDT engines compared (crdt-sync bench merge --help)", add_help=False,
        prefix_chars="+")  # "+": every option goes to the benchmark's own parser, imported when run
    p.add_argument("options", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench_merge)
    return parser


def _entity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("space")
    p.add_argument("collection")
    p.add_argument("id")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.data = getattr(args, "data", None)
    args.json = getattr(args, "json", False)
    out = Output(args.json)
    try:
        args.func(args, out)
    except UsageError as exc:
        out.fail(EXIT_USAGE, "usage", str(exc))
    except NotFound as exc:
        out.fail(EXIT_NOT_FOUND, "not-found", str(exc))
    except Rejected as exc:
        out.fail(EXIT_REJECTED, exc.reason, f"rejected, nothing changed: {exc}")
    except ValueRejected as exc:
        out.fail(EXIT_REJECTED, "value-rejected", f"{exc}; nothing changed")
    except StoreError as exc:
        out.fail(EXIT_ERROR, "store", str(exc))
    except ConnectionError as exc:
        out.fail(EXIT_ERROR, "unreachable", str(exc))
    except CrdtSyncError as exc:
        out.fail(EXIT_ERROR, "error", str(exc))
    except OSError as exc:
        out.fail(EXIT_ERROR, "os", f"{exc}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
