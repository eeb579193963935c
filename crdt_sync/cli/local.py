"""The local commands: entities, spaces, status, bundles, the demo and the benchmark runner."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import DiskFull, NotFound, PassphraseError, Rejected, ValueRejected
from ..values import check_name, loads_json
from .output import Output, UsageError, data_dir, parse_assignment, short, show, space_id

#: The largest seq a version vector may name (SQLite's INTEGER is signed 64-bit).
SEQ_MAX = 2**63 - 1


def cmd_init(args: argparse.Namespace, out: Output) -> None:
    from ..replica import Replica
    from ..secrets import KEYS_FILE

    path = data_dir(args.data)
    created = not (path / "store.sqlite3").exists()
    new = _new_passphrase(args)
    if new is not None and not (path / KEYS_FILE).exists():
        replica = Replica(path, passphrase=new)  # created sealed: the seed never on disk in the clear
    else:
        replica = open_replica(args)
    with replica:
        if new is not None:
            replica.secrets.set_passphrase(new)
        sealed = replica.secrets.sealed
        out.emit({"device": replica.device_id, "data": str(path), "created": created, "sealed": sealed},
                 lambda: out.console.print(replica.device_id))


def _new_passphrase(args: argparse.Namespace) -> str | None:
    """The passphrase ``init`` seals the keys with: ``--passphrase-env VAR``'s, else with
    ``--passphrase`` $CRDT_SYNC_PASSPHRASE's, else asked twice on the terminal."""
    from ..secrets import PASSPHRASE_ENV

    if args.passphrase_env is not None:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise UsageError(f"--passphrase-env {args.passphrase_env}: that variable is not set (or empty)")
        return value
    if not args.passphrase:
        return None
    if os.environ.get(PASSPHRASE_ENV):
        return os.environ[PASSPHRASE_ENV]
    if not sys.stdin.isatty():
        raise UsageError(f"--passphrase: set {PASSPHRASE_ENV} (or use --passphrase-env VAR): "
                         "there is no terminal to ask on")
    import getpass

    first = getpass.getpass("New passphrase: ")
    if not first or getpass.getpass("Again: ") != first:
        raise UsageError("the passphrases are empty or differ; nothing changed")
    return first


def cmd_put(args: argparse.Namespace, out: Output) -> None:
    fields = dict(parse_assignment(a) for a in args.fields)
    with open_replica(args) as replica:
        space = replica.space(args.space)
        space.put(args.collection, args.id, fields)
        result = space.get(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "fields": result}, lambda: _print_fields(out, result))


def cmd_get(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args, out) as replica:
        result = _space(replica, args.space).get(args.collection, args.id)
        out.emit(result, lambda: _print_fields(out, result))


def _print_fields(out: Output, fields: dict[str, Any]) -> None:
    out.table(None, ["field", "value"], [(k, v) for k, v in fields.items()])


#: Rows per table in ``list`` for people (each table is printed before the next is read).
LIST_CHUNK = 1000


def cmd_list(args: argparse.Namespace, out: Output) -> None:
    """Streams: one entity is in memory at a time (a JSON array written item by item; for
    people, a table every :data:`LIST_CHUNK` rows)."""
    with open_replica(args, out) as replica:
        rows = ({"collection": c, "id": i, "fields": f}
                for c, i, f in _space(replica, args.space).rows(args.collection))
        if out.json:
            out.stream_list(rows)
            return
        count = 0
        while chunk := list(itertools.islice(rows, LIST_CHUNK)):
            out.table(None if count else f"{args.space}", ["collection", "id", "fields"],
                      [(r["collection"], r["id"], r["fields"]) for r in chunk])
            count += len(chunk)
        out.console.print(f"{count} entities")


def cmd_delete(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        _space(replica, args.space).delete(args.collection, args.id)
        out.emit({"space": args.space, "collection": args.collection, "id": args.id,
                  "deleted": True}, lambda: out.console.print(f"deleted {args.collection}/{args.id}"))


def cmd_history(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args, out) as replica:
        changes = [h.to_dict() for h in _space(replica, args.space).history(args.collection, args.id)]
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
    with open_replica(args, out) as replica:
        items = [c.to_dict() for c in _space(replica, args.space).conflicts()]
        out.emit(items, lambda: out.table(
            f"conflicts in {args.space}: {len(items)}", ["entity", "field", "winner", "lost"],
            [(f"{c['collection']}/{c['id']}", c["field"], _entry(c["winner"]),
              "\n".join(_entry(e) for e in c["losers"])) for c in items]))


def _entry(entry: dict[str, Any]) -> str:
    value = show(entry["value"]) if entry["kind"] == "value" else f"({entry['kind']})"
    return f"{value} by {short(entry['author'])} at {entry['time']}"


def cmd_leave(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        replica.leave(sid)
        out.emit({"space": sid, "kept": False}, lambda: out.console.print(
            f"stopped keeping {args.space} ({sid}); its data stays (`crdt-sync keep SPACE` resumes)",
            highlight=False))


def cmd_status(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args, out) as replica:
        status = replica.status().to_dict()
        names = {i.id: f"{i.name} ({i.id[:12]}...)" for i in replica.space_infos() if i.name}
        links = _daemon_links(replica.path)
    _merge_links(status, links)

    def human() -> None:
        out.console.print(f"device  {status['device']}\ndata    {status['data']}\n"
                          f"unsealed edits {status['unsealed']}, rejections {status['rejections']}")
        out.table("spaces", ["space", "version vector", "own envelopes no peer acknowledged"],
                  [(name, {short(a): s for a, s in info["version_vector"].items()},
                    str(info["unacknowledged"])) for sid, info in status["spaces"].items()
                   for name in [names.get(sid, sid)]])
        out.table("peers (what each last acknowledged)", ["space", "peer", "synced", "behind by",
                                                          "acknowledged", "last seen", "over",
                                                          "last synced"],
                  [(name, short(p["device"]), "yes" if p["synced"] else "no",
                    f"{p['behind']} envelopes", {short(a): s for a, s in p["version_vector"].items()},
                    p["seen"], _over(p), p["last_synced"] or "-")
                   for sid, info in status["spaces"].items() for p in info["peers"]
                   for name in [names.get(sid, sid)]])
        daemon = status["daemon"]
        if daemon is not None:
            state = "running" if daemon["running"] else "stopped"
            out.console.print(f"daemon  {state} (pid {daemon['pid']}), transports "
                              f"{', '.join(daemon['transports']) or 'none'}, updated {daemon['updated']}",
                              highlight=False)
            down = [t for t in daemon["transport_states"]
                    if isinstance(t, dict) and t.get("state", "up") != "up"]
            if down:
                out.table("transports down (reopened with backoff while the daemon runs)",
                          ["transport", "state", "since", "attempts", "next attempt", "reason"],
                          [(str(t.get("name")), str(t.get("state")), str(t.get("since")),
                            str(t.get("attempts")), str(t.get("next_attempt") or "-"),
                            str(t.get("reason") or "-")) for t in down])
            if daemon["candidates"]:
                out.table("discovered (unauthenticated candidates)",
                          ["transport", "name", "address", "seen", "lost"],
                          [(c["transport"], c["key"], c["address"], c["seen"], c["lost"] or "-")
                           for c in daemon["candidates"]])
        forks = [(name, short(f["author"]), str(f["seq"]), f["source"], f["since"])
                 for sid, info in status["spaces"].items() for f in info["forks"]
                 for name in [names.get(sid, sid)]]
        if forks:
            out.table("forks (proven: each author excluded from that seq on; not liftable)",
                      ["space", "author", "from seq", "proof from", "since"], forks)
        _print_quarantine(out, status["quarantined"], status["refused_by_peers"])
        for r in status["clock_refusals"]:
            whose = "this device's clock" if r["mine"] else f"the clock of {short(r['author'])}"
            out.console.print(
                f"[yellow]peer {short(r['peer'])} holds back {'your' if r['mine'] else 'the'} envelopes "
                f"of {r['space']} from seq {r['seq']}: {whose} is {_duration(r['ahead_ms'])} ahead "
                f"of its clock (said {r['at']}); set the clock right, they sync once it agrees[/]")
        for d in status["journal_damage"]:
            where = "at its end (or a write cut short)" if d["tail"] else f"at byte {d['offset']}"
            out.err.print(f"[bold red]journal damage:[/] {d['records']} record(s), {d['bytes']} bytes "
                          f"{where} of {d['journal']} were lost when it was recovered at {d['at']}; "
                          f"every other record was kept. The file is kept at {d['kept']}",
                          markup=True, highlight=False)

    out.emit(status, human)


def _daemon_links(path: Path) -> dict[str, Any] | None:
    """What the daemon (``crdt-sync peer``) last wrote about its peers, if it ever ran here.

    Imported lazily: the daemon lives in ``transports/``, which needs no extra to read this.
    """
    from crdt_sync.transports.daemon import read_status

    status = read_status(path)
    if status is not None and status.get("running") and not _alive(status.get("pid")):
        status["running"] = False  # it was killed: what it wrote is its last view
        for device in status.get("devices", {}).values():
            if isinstance(device, dict):
                device["connected"] = False
    return status


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _merge_links(status: dict[str, Any], links: dict[str, Any] | None) -> None:
    """Add to each space's peers how the daemon reached it and when that space last synced."""
    devices = links.get("devices", {}) if links is not None else {}
    for name, info in status["spaces"].items():
        for peer in info["peers"]:
            link = devices.get(peer["device"])
            link = link if isinstance(link, dict) else {}
            peer["transport"] = link.get("transport")
            peer["address"] = link.get("address")
            peer["connected"] = bool(link.get("connected", False))
            peer["last_synced"] = (link.get("last_synced") or {}).get(name)
    status["daemon"] = None if links is None else {
        key: links.get(key) for key in ("pid", "running", "updated", "transports", "transport_states",
                                        "lan_addresses", "lan_port", "candidates")}
    if status["daemon"] is not None:
        for key in ("transports", "transport_states", "candidates"):
            status["daemon"][key] = status["daemon"][key] or []


def _over(peer: dict[str, Any]) -> str:
    if peer["transport"] is None:
        return "-"
    return f"{peer['transport']} {peer['address']}{' (connected)' if peer['connected'] else ''}"


def _print_quarantine(out: Output, quarantined: list[dict[str, Any]],
                      refused: list[dict[str, Any]] | None = None) -> None:
    if quarantined:
        out.table("quarantined authors (their envelopes are skipped; lift with "
                  "`crdt-sync quarantine lift SPACE AUTHOR`)",
                  ["space", "author", "from seq", "reason", "since", "detail"],
                  [(q["space"], q["author"], str(q["from_seq"]), q["reason"], q["since"], q["detail"])
                   for q in quarantined])
    if refused:
        out.table("refused by peers (they set these chains aside)",
                  ["space", "author", "peer", "from seq", "reason", "since"],
                  [(r["space"], short(r["author"]), short(r["peer"]), str(r["from_seq"]), r["reason"],
                    r["since"]) for r in refused])


def cmd_quarantine(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        space = None if args.space is None else space_id(replica, args.space)
        if args.action == "list":
            items = [q.to_dict() for q in replica.quarantined(space)]
            out.emit({"quarantined": items}, lambda: (
                _print_quarantine(out, items) if items else out.console.print("(no quarantined authors)")))
            return
        if args.space is None or args.author is None:
            raise UsageError("quarantine lift takes SPACE AUTHOR (see `crdt-sync quarantine list`)")
        lifted = replica.lift_quarantine(space, args.author)
    if not lifted:
        raise NotFound(f"{args.author} is not quarantined in {args.space} "
                       "(see `crdt-sync quarantine list`)")
    out.emit({"space": args.space, "author": args.author, "lifted": True},
             lambda: out.console.print(f"lifted the quarantine of {args.author} in {args.space}: its "
                                       "envelopes are accepted again when they are valid (next sync)"))

def _duration(ms: int) -> str:
    seconds = ms / 1000
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} seconds"


def cmd_export(args: argparse.Namespace, out: Output) -> None:
    from ..bundle import decode_bundle

    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        since: dict[str, int] = {}
        if args.since:
            since = _parse_vv(args.since)
        elif args.for_peer:
            since = replica.peer_version_vector(args.for_peer, sid)
        # a device never met gets a snapshot and the tail when this device can give one
        never_met = bool(args.for_peer) and not since
        data = None
        if args.snapshot or never_met:
            try:
                data = replica.export_bundle(sid, since, snapshot=True)
            except Rejected:
                if args.snapshot:
                    raise
        if data is None:
            data = replica.export_bundle(sid, since)
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
        value = loads_json(text)
    except ValueError:  # not JSON, or nested too deep (ValueRejected is a ValueError)
        raise UsageError("--since takes a JSON version vector, e.g. '{\"<device>\": 12}'") from None
    if not isinstance(value, dict) or not all(
            type(v) is int and 0 <= v <= SEQ_MAX for v in value.values()):
        raise UsageError(f"--since takes a JSON object of device id to seq (0..{SEQ_MAX})")
    for device in value:
        try:
            check_name("device id", device)
        except ValueRejected as exc:
            raise UsageError(f"--since: {exc}") from None
    return {str(k): int(v) for k, v in value.items()}


def cmd_import(args: argparse.Namespace, out: Output) -> None:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise NotFound(f"cannot read bundle {args.file}: {exc.strerror}") from None
    with open_replica(args) as replica:
        result = replica.import_bundle(data, source=f"bundle {args.file}")
    held = (f"; {result.held_back} held back: stamped {_duration(result.ahead_ms)} ahead of this "
            f"device's clock, import the bundle again once the clocks agree" if result.held_back else "")
    out.emit({"space": result.space, "exporter": result.exporter, "applied": result.applied,
              "duplicates": result.duplicates, "held_back": result.held_back,
              "ahead_ms": result.ahead_ms, "forks": result.forks, "snapshot": result.snapshot},
             lambda: out.console.print(f"imported {result.applied} envelopes into {result.space} "
                                       f"({result.duplicates} already here) from "
                                       f"{short(result.exporter)}{held}" + _snapshot_note(result.snapshot) + (
                                           f"; {result.forks} fork(s) proven: each author is "
                                           f"excluded from its fork seq (crdt-sync status)"
                                           if result.forks else "")))


def _snapshot_note(outcome: str | None) -> str:
    if outcome is None:
        return ""
    if outcome == "applied":
        return "; started from the bundle's snapshot"
    return f"; the bundle's snapshot was refused ({outcome}: crdt-sync status shows the rejection)"


def cmd_demo(args: argparse.Namespace, out: Output) -> None:
    from .demo import run_demo

    run_demo(Path(args.dir) if args.dir else None, out.console, as_json=out.json)


def cmd_bench_merge(args: argparse.Namespace, out: Output) -> None:
    from crdt_sync.benchmarks.merge.runner import main as bench_merge

    code = bench_merge(args.options)
    if code:
        raise SystemExit(code)


def _space(replica: Any, text: str) -> Any:
    """The space SPACE names (an id or a local name): a command that reads never creates one."""
    return replica.space(space_id(replica, text))


def open_replica(args: argparse.Namespace, reading: Output | None = None) -> Any:
    """The replica of ``--data``. A command that only reads passes its ``Output``: on a full
    disk it then gets the replica read-only, with a warning, instead of the error. Sealed
    keys open with ``$CRDT_SYNC_PASSPHRASE``, else with a passphrase asked on the terminal."""
    path = data_dir(args.data)
    try:
        return _open_replica(path, reading, None)
    except PassphraseError as exc:
        if exc.reason != "missing" or not sys.stdin.isatty():
            raise
        import getpass

        return _open_replica(path, reading, getpass.getpass(f"Passphrase of {path}: "))


def _open_replica(path: Path, reading: Output | None, passphrase: str | None) -> Any:
    from ..replica import Replica

    if reading is None:
        return Replica(path, passphrase=passphrase)
    try:
        return Replica(path, passphrase=passphrase)
    except DiskFull as full:
        replica = Replica(path, read_only=True, passphrase=passphrase)
        pending = replica.unsealed()
        reading.warn("disk-full", f"{full}. Showing what the store holds, read-only" + (
            f"; {pending} journaled edits are not sealed yet and not shown" if pending else ""))
        return replica
