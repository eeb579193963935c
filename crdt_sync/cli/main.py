"""The ``crdt-sync`` command: the composition root.

The one place that wires the engine (:mod:`crdt_sync` below this package) to the transports
and the relay; those are imported lazily by the commands that need them, so a machine
without the ``relay`` extra can still use every local command.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 5 rejected input. Errors go to stderr, as
``{"error": {"code": N, "kind": ..., "message": ...}}`` under ``--json``; each kind of failure
has its own handler and kind (``disk-full``, ``store-corrupt``, ``value-rejected``, ...: see
the README), never one message for everything.
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..diskfaults import store_error
from ..errors import (
    AmbiguousSpace,
    CrdtSyncError,
    DiskFull,
    NotFound,
    PassphraseError,
    Rejected,
    StoreCorrupt,
    StoreError,
    StoreVersionError,
    ValueRejected,
)
from .local import (
    cmd_bench_merge,
    cmd_conflicts,
    cmd_delete,
    cmd_demo,
    cmd_export,
    cmd_get,
    cmd_history,
    cmd_import,
    cmd_init,
    cmd_leave,
    cmd_list,
    cmd_put,
    cmd_quarantine,
    cmd_status,
)
from .members import HINTS, WRITE_COMMANDS
from .members import add_commands as add_member_commands
from .net import add_commands
from .output import (
    ENV_DATA,
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    Output,
    UsageError,
    data_dir,
)
from .sync_report import SyncFailed


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes raise :class:`UsageError` (exit 2, as JSON under ``--json``)
    instead of argparse's own printing; subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                        help=f"data directory (default: ${ENV_DATA}, else the user data directory)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print machine-readable JSON")
    parser = _Parser(
        prog="crdt-sync", parents=[common],
        description="Offline-first sync engine for field teams. Exit codes: 0 ok, 1 error, "
                    "2 usage, 3 not found, 5 rejected input.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace, Output], None],
                help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("init", cmd_init, "create the data directory if needed and print the device id")
    p.add_argument("--passphrase", action="store_true",
                   help="seal the device's keys (DIR/keys) with a passphrase: from $CRDT_SYNC_PASSPHRASE, "
                        "else asked on the terminal; other commands then read it from there too")
    p.add_argument("--passphrase-env", metavar="VAR",
                   help="seal them with the passphrase in environment variable VAR (a new one: the "
                        "current one, if sealed already, is still read from $CRDT_SYNC_PASSPHRASE)")
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
    command("leave", cmd_leave, "stop keeping a space (its data stays)").add_argument("space")
    command("status", cmd_status, "device, spaces, version vectors, what peers acknowledged")
    p = command("quarantine", cmd_quarantine,
                "authors set aside per space (a refused signed envelope): list them, or lift one")
    p.add_argument("action", choices=["list", "lift"])
    p.add_argument("space", nargs="?", help="list: only this space; lift: the space")
    p.add_argument("author", nargs="?", help="lift: the author's device id")
    p = command("export", cmd_export, "write a bundle of a space for another device")
    p.add_argument("space")
    p.add_argument("--out", required=True, metavar="FILE")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--since", metavar="JSON", help="only what this version vector lacks")
    group.add_argument("--for", dest="for_peer", metavar="DEVICE",
                       help="only what DEVICE lacks, as far as this device knows (a device never met: "
                            "a snapshot and the tail, when this device can give one)")
    p.add_argument("--snapshot", action="store_true",
                   help="a signed snapshot and the envelopes after it instead of the whole history")
    command("import", cmd_import, "verify and apply a bundle, all or nothing").add_argument("file")
    add_commands(sub, common)
    add_member_commands(sub, common)
    command("demo", cmd_demo, "a space shared by invitation: field devices join over a relay, "
                            "edit offline and converge; a contractor is revoked") \
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


def _run(args: argparse.Namespace, out: Output) -> None:
    try:
        args.func(args, out)
    except sqlite3.Error as exc:  # a read that met a damaged page, outside a write transaction
        from ..store import DB_NAME

        raise store_error(exc, data_dir(args.data) / DB_NAME, "reading the store") from exc


#: the positional arguments of one word each (argparse may hand one over as [] after a
#: second `--`); the others (fields, spaces, options) take several
_ONE_WORD = frozenset({"action", "author", "collection", "device", "dir", "file", "id", "name",
                       "space", "token"})


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name from a non-UTF-8 command line prints
        if isinstance(stream, io.TextIOWrapper):  # as \udcXX rather than failing to print
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        words = sys.argv[1:] if argv is None else list(argv)
        Output("--json" in words).fail(EXIT_USAGE, "usage", str(exc))
    args.data = getattr(args, "data", None)
    args.json = getattr(args, "json", False)
    out = Output(args.json)
    for name, value in vars(args).items():
        # argparse gives a one-word argument as [] after a second `--` (a CPython quirk)
        if isinstance(value, list) and name in _ONE_WORD:
            out.fail(EXIT_USAGE, "usage", f"argument {name} is missing (is there an extra `--`?)")
    try:
        _run(args, out)
    except UsageError as exc:
        out.fail(EXIT_USAGE, "usage", str(exc))
    except SyncFailed as exc:  # before Rejected: a sync that stopped did change things
        out.fail(exc.exit_code, exc.kind, str(exc),
                 {"sync": exc.report.to_dict()} if exc.report is not None else None)
    except AmbiguousSpace as exc:  # before NotFound, in case it is one
        out.fail(EXIT_USAGE, "ambiguous-space", str(exc), {"name": exc.name, "ids": list(exc.ids)})
    except NotFound as exc:
        out.fail(EXIT_NOT_FOUND, "not-found", str(exc))
    except Rejected as exc:
        hint = f"; {HINTS[exc.reason]}" if exc.reason in HINTS and (
            args.command in WRITE_COMMANDS or exc.reason == "not-admin") else ""
        out.fail(EXIT_REJECTED, exc.reason, f"rejected, nothing changed: {exc}{hint}")
    except ValueRejected as exc:
        out.fail(EXIT_REJECTED, "value-rejected", f"{exc}; nothing changed")
    except DiskFull as exc:
        out.fail(EXIT_ERROR, "disk-full", str(exc))
    except StoreCorrupt as exc:
        out.fail(EXIT_ERROR, "store-corrupt", str(exc))
    except StoreVersionError as exc:  # an older format names `crdt-sync migrate DIR`
        out.fail(EXIT_ERROR, "store-version", str(exc))
    except StoreError as exc:
        out.fail(EXIT_ERROR, "store", str(exc))
    except PassphraseError as exc:
        out.fail(EXIT_ERROR, "passphrase", str(exc))
    except ConnectionError as exc:
        out.fail(EXIT_ERROR, "unreachable", str(exc))
    except CrdtSyncError as exc:
        out.fail(EXIT_ERROR, "error", str(exc))
    except OSError as exc:
        out.fail(EXIT_ERROR, "os", f"{exc}")
    return EXIT_OK
