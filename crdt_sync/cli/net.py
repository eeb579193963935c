"""The networked ``crdt-sync`` commands: ``relay``, ``sync`` and ``peer``.

They import ``relay/`` and ``transports/`` lazily, so a machine without the ``relay`` extra
can still use every local command.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CrdtSyncError
from . import sync_report
from .local import open_replica
from .output import Output, UsageError, data_dir

if TYPE_CHECKING:
    from crdt_sync.transports.driver import SessionOutcome

    from ..protocol import Session


class Unreachable(CrdtSyncError, ConnectionError):
    """The relay could not be reached."""


def _need_extra() -> None:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise CrdtSyncError("this command needs the relay extra: pip install 'crdt-sync[relay]'") from None


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("relay", parents=[common], help="run a relay server",
                       description="Run a relay: store-and-forward of envelopes over WebSocket "
                                   "(/v1/sync), /healthz and /metrics. Settings: options, else "
                                   "CRDT_SYNC_RELAY_<NAME> variables, else the [relay] table "
                                   "of --config FILE.")
    p.set_defaults(func=cmd_relay)
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8787; 0 picks a free one)")
    p.add_argument("--config", type=Path, help="TOML file with a [relay] table")
    p.add_argument("--allow-list", type=Path, help="file of device ids allowed (reloaded on SIGHUP)")
    p.add_argument("--cert", type=Path, help="TLS certificate (serve wss://)")
    p.add_argument("--key", type=Path, help="TLS private key")
    p.add_argument("--max-connections", type=int)
    p.add_argument("--log-format", choices=["text", "json"])

    for name, func, what in (("sync", cmd_sync, "push and pull through a relay until caught up"),
                             ("peer", cmd_peer, "stay connected to a relay and sync as edits happen")):
        p = sub.add_parser(name, parents=[common], help=what, description=what)
        p.set_defaults(func=func)
        p.add_argument("--relay", required=True, metavar="URL", help="ws://host:port or wss://host")
        p.add_argument("spaces", nargs="*", metavar="SPACE", help="only these spaces (default: all kept)")
        if name == "sync":
            p.add_argument("--timeout", type=_seconds, default=120.0,
                           help="give up once nothing was received or acknowledged for this many "
                                "seconds (a long backlog that keeps moving is never cut)")


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (an argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a timeout is a positive, finite number of seconds, not {text!r}")
    return value


def cmd_relay(args: argparse.Namespace, out: Output) -> None:
    run_relay(args, out)


def cmd_sync(args: argparse.Namespace, out: Output) -> None:
    run_sync(args, out, live=False)


def cmd_peer(args: argparse.Namespace, out: Output) -> None:
    run_sync(args, out, live=True)


def run_relay(args: argparse.Namespace, out: Output) -> None:
    _need_extra()
    from crdt_sync.relay.config import load_config
    from crdt_sync.relay.server import serve

    overrides = {"host": args.host, "port": args.port, "allow_list": args.allow_list,
                 "cert": args.cert, "key": args.key, "max_connections": args.max_connections,
                 "log_format": args.log_format or ("json" if out.json else None)}
    config = load_config(overrides | {"data": args.data}, config_file=args.config)
    for what, path in (("certificate", config.cert), ("private key", config.key)):
        if path is not None and not Path(path).is_file():
            raise CrdtSyncError(f"cannot read the TLS {what} {path}: no such file")
    if config.data is None:
        config = replace(config, data=data_dir(None))
    raise SystemExit(asyncio.run(serve(config)))


def run_sync(args: argparse.Namespace, out: Output, live: bool) -> None:
    _need_extra()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from crdt_sync.transports.relay import run_peer, sync_session
    from crdt_sync.transports.websocket import ConnectFailed, sync_url

    try:
        sync_url(args.relay)
    except ValueError as exc:  # before anything is opened: a mistyped URL is a usage error
        raise UsageError(f"--relay {args.relay!r}: {exc}") from None
    with open_replica(args) as replica:
        for space in args.spaces:
            replica.keep(space)
        spaces = args.spaces or None
        if not live and not replica.spaces():
            raise sync_report.no_spaces(args.relay)
        if live:
            stop = asyncio.Event()

            async def peer() -> int:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, stop.set)
                out.err.print(f"peer {replica.device_id[:12]} syncing with {args.relay} "
                              "(SIGTERM or Ctrl-C stops)")
                return await run_peer(replica, args.relay, stop, spaces=spaces,
                                      on_event=lambda e: _log_event(out, e))
            sessions = asyncio.run(peer())
            out.emit({"relay": args.relay, "sessions": sessions, "stopped": True})
            return
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            console=out.err, disable=out.json, transient=True)
        holder: dict[str, Session] = {}
        task = progress.add_task("syncing", total=None)

        def show(session: Session) -> None:
            done = session.envelopes_in + session.envelopes_acked
            progress.update(task, total=max(session.expected(), done), completed=done,
                            description=f"sent {session.envelopes_out}, stored {session.envelopes_acked}, "
                                        f"received {session.envelopes_in}")

        async def one_shot() -> tuple[SessionOutcome, float | None]:
            stop = asyncio.Event()

            def on_session(session: Session) -> None:
                holder["session"] = session

            running = asyncio.ensure_future(sync_session(replica, args.relay, spaces=spaces, stop=stop,
                                                         on_session=on_session))
            return await _watch(running, holder, stop, args.timeout, show)

        try:
            with progress:
                outcome, stalled = asyncio.run(one_shot())
        except ConnectFailed as exc:
            raise Unreachable(str(exc)) from None
        session = holder["session"]
        report = sync_report.build(args.relay, session, outcome.closed, outcome.synced,
                                   outcome.events, outcome.bytes_in, outcome.bytes_out, stalled,
                                   device=replica.device_id)
        if not outcome.synced:
            raise sync_report.failure(report, outcome.closed)
        out.emit(report.to_dict(), lambda: out.console.print(sync_report.summary(report)))


#: How often a one-shot sync looks at its session (progress display, the --timeout watch).
WATCH_INTERVAL = 0.25


async def _watch(running: asyncio.Future[SessionOutcome], holder: dict[str, Session],
                 stop: asyncio.Event, limit: float, show: Callable[[Session], None],
                 ) -> tuple[SessionOutcome, float | None]:
    """Wait for the session; end it (going-away) once nothing was received or acknowledged
    for ``limit`` seconds. Returns its outcome and, if it was ended so, ``limit``."""
    loop = asyncio.get_running_loop()
    moved_at, last = loop.time(), -1
    stalled: float | None = None
    while not running.done():
        await asyncio.wait([running], timeout=WATCH_INTERVAL)
        session = holder.get("session")
        if session is None or stalled is not None:
            continue
        show(session)
        progress = session.envelopes_in + session.envelopes_acked
        now = loop.time()
        if progress != last:
            moved_at, last = now, progress
        elif now - moved_at >= limit:
            stalled = limit
            stop.set()  # the session says BYE going-away and ends
    return running.result(), stalled


def _log_event(out: Output, event: Any) -> None:
    out.err.print(f"[dim]{type(event).__name__}[/] {event}", highlight=False)
