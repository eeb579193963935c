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
    p.add_argument("--store", metavar="URL",
                   help="postgresql:// URL: store in that database (default: SQLite in the data directory)")
    p.add_argument("--bus", metavar="URL",
                   help="redis:// URL: fan-out with the other relay nodes of the same --store")
    p.add_argument("--node", metavar="NAME", help="this node's name on the bus (default HOSTNAME-PORT)")
    p.add_argument("--cert", type=Path, help="TLS certificate (serve wss://)")
    p.add_argument("--key", type=Path, help="TLS private key")
    p.add_argument("--max-connections", type=int)
    p.add_argument("--trusted-proxies", metavar="LIST",
                   help="addresses or CIDR networks of the load balancers in front of the relay, "
                        "separated by commas: their connections count under the client address "
                        "they forward (PROXY protocol, else --forwarded-header)")
    p.add_argument("--forwarded-header", choices=["x-forwarded-for", "forwarded", "none"],
                   help="the HTTP header trusted proxies set (default x-forwarded-for)")
    p.add_argument("--log-format", choices=["text", "json"])

    what = "push and pull through a relay until caught up"
    p = sub.add_parser("sync", parents=[common], help=what, description=what)
    p.set_defaults(func=cmd_sync)
    p.add_argument("--relay", required=True, metavar="URL", help="ws://host:port or wss://host")
    p.add_argument("spaces", nargs="*", metavar="SPACE", help="only these spaces (default: all kept)")
    p.add_argument("--timeout", type=_seconds, default=120.0,
                   help="give up once nothing was received or acknowledged for this many "
                        "seconds (a long backlog that keeps moving is never cut)")
    add_peer_command(sub, common)


def add_peer_command(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "peer", parents=[common], help="the sync daemon: LAN peers, BLE and relays, live",
        description="Run the sync daemon: every enabled transport over this data directory, "
                    "live (edits made by other processes on it are sent as they happen), "
                    "forwarding between them. SIGTERM or Ctrl-C stops it (exit 0). LAN "
                    "interfaces: --interface, else the one holding the default route (never "
                    "every interface).")
    p.set_defaults(func=cmd_peer)
    p.add_argument("--lan", action="store_true", help="find LAN peers by mDNS and sync with them")
    p.add_argument("--relay", action="append", default=[], metavar="URL",
                   help="stay connected to this relay (ws://host:port or wss://host; repeatable)")
    p.add_argument("--interface", action="append", default=[], metavar="NAME|ADDR",
                   help="LAN interface name or address to listen and multicast on (repeatable)")
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT", dest="static_peers",
                   help="a LAN peer to dial without discovery, for networks that block "
                        "multicast (repeatable; runs the LAN listener, mDNS only with --lan)")
    p.add_argument("--port", type=int, default=0,
                   help="LAN listening port (default 0: a free one, printed at start)")
    p.add_argument("--ble", action="store_true",
                   help="find nearby devices over Bluetooth LE and sync with them")
    p.add_argument("--ble-transport", metavar="SPEC",
                   help=f"the bumble transport of the BLE radio (default {DEFAULT_BLE}; "
                        "hci-socket:0, tcp-client:HOST:PORT of `python -m "
                        "crdt_sync.transports.ble.virtual`; implies --ble)")
    p.add_argument("--ble-role", choices=["both", "central", "peripheral"], default="both",
                   help="BLE roles: scan and connect, advertise and serve, or both (default)")
    p.add_argument("spaces", nargs="*", metavar="SPACE", help="only these spaces (default: all kept)")


#: The BLE radio when --ble names none: the first USB dongle.
DEFAULT_BLE = "usb:0"
#: bumble transport schemes ``--ble-transport`` takes, and those whose rest is HOST:PORT.
BLE_SCHEMES = ("usb", "pyusb", "hci-socket", "tcp-client", "serial", "vhci", "unix", "udp",
               "android-emulator", "android-netsim")
_HOST_PORT_SCHEMES = ("tcp-client",)


def ble_spec(text: str) -> str:
    """A bumble transport SPEC, checked before anything is opened."""
    scheme, _, rest = text.partition(":")
    if scheme not in BLE_SCHEMES or (not rest and scheme not in ("vhci", "android-emulator")):
        raise UsageError(f"--ble-transport {text!r}: expected a bumble transport SPEC such as "
                         f"usb:0, hci-socket:0 or tcp-client:HOST:PORT (schemes: "
                         f"{', '.join(BLE_SCHEMES)})")
    if scheme in _HOST_PORT_SCHEMES:
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--ble-transport {text!r}: expected {scheme}:HOST:PORT, a port "
                             f"in 1..65535")
    return text


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``, checked."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--peer {text!r}: expected HOST:PORT (or [IPV6]:PORT), a port in 1..65535")
    return host, int(port)


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
    run_sync(args, out)


def cmd_peer(args: argparse.Namespace, out: Output) -> None:
    run_peer_daemon(args, out)


def run_relay(args: argparse.Namespace, out: Output) -> None:
    _need_extra()
    from crdt_sync.relay.config import load_config
    from crdt_sync.relay.server import serve

    overrides = {"host": args.host, "port": args.port, "allow_list": args.allow_list, "store": args.store,
                 "bus": args.bus, "node": args.node,
                 "cert": args.cert, "key": args.key, "max_connections": args.max_connections,
                 "trusted_proxies": args.trusted_proxies, "forwarded_header": args.forwarded_header,
                 "log_format": args.log_format or ("json" if out.json else None)}
    config = load_config(overrides | {"data": args.data}, config_file=args.config)
    for what, path in (("certificate", config.cert), ("private key", config.key)):
        if path is not None and not Path(path).is_file():
            raise CrdtSyncError(f"cannot read the TLS {what} {path}: no such file")
    if config.data is None:
        config = replace(config, data=data_dir(None))
    raise SystemExit(asyncio.run(serve(config)))


def run_peer_daemon(args: argparse.Namespace, out: Output) -> None:
    """``crdt-sync peer``: :class:`~crdt_sync.transports.daemon.Peer` until SIGTERM/SIGINT."""
    _need_extra()
    ble = ble_spec(args.ble_transport) if args.ble_transport is not None else (
        DEFAULT_BLE if args.ble else None)
    if not (args.lan or args.relay or args.static_peers or ble):
        raise UsageError("nothing to sync with: give --lan, --ble, --relay URL or --peer HOST:PORT")
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port {args.port}: a port is in 0..65535")
    static = [host_port(p) for p in args.static_peers]
    from crdt_sync.transports.websocket import sync_url

    args.relay = list(dict.fromkeys(args.relay))  # one relay named twice is one transport
    for url in args.relay:
        try:
            sync_url(url)
        except ValueError as exc:  # before anything is opened: a mistyped URL is a usage error
            raise UsageError(f"--relay {url!r}: {exc}") from None
    if args.lan or static:
        _need_zeroconf()
    if ble is not None:
        _need_ble()
    from crdt_sync.relay.logs import setup_logging
    from crdt_sync.transports.daemon import Peer, PeerError

    # The daemon's warnings (a lost radio, each failed attempt to reopen it) as structured
    # lines on stderr, with their fields: JSON with --json.
    setup_logging("json" if out.json else "text", "warning")
    with open_replica(args) as replica:
        args.spaces = [replica.space_id(space) for space in args.spaces]  # names: their ids
        for space in args.spaces:
            replica.keep(space)

        async def daemon() -> dict[str, Any]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            try:
                peer = Peer(replica, lan=args.lan, relay=args.relay, interfaces=args.interface,
                            static_peers=static, lan_port=args.port, spaces=args.spaces or None,
                            ble=ble, ble_role=args.ble_role,
                            on_session_event=lambda transport, e: _log_event(out, transport, e))
                async with peer:
                    out.err.print(_started(replica.device_id, peer), highlight=False)
                    await stop.wait()
                    lan = peer.lan_transport
                    where = {"addresses": lan.addresses, "port": lan.port} if lan else None
            except PeerError as exc:
                raise UsageError(str(exc)) from None
            except OSError as exc:  # the LAN port or address could not be bound
                raise CrdtSyncError(f"cannot listen on the LAN: {exc}; check --interface and "
                                    f"--port") from None
            return {"device": replica.device_id, "transports": [t.name for t in peer.transports],
                    "lan": where, "relay": peer.relay, "ble": ble, "sessions": peer.sessions,
                    "devices_seen": len(peer.devices), "stopped": True}
        out.emit(asyncio.run(daemon()))


def _started(device: str, peer: Any) -> str:
    parts = []
    lan = peer.lan_transport
    if lan is not None:
        where = ", ".join(f"[{a}]:{lan.port}" if ":" in a else f"{a}:{lan.port}" for a in lan.addresses)
        parts.append(f"lan on {where}{' (mDNS)' if lan.mdns else ''}")
    parts += [f"relay {url}" for url in peer.relay]
    if peer.ble is not None:
        roles = "" if peer.ble_role == "both" else f" ({peer.ble_role})"
        parts.append(f"ble on {peer.ble}{roles}")
    return f"peer {device[:12]} syncing: {'; '.join(parts)} (SIGTERM or Ctrl-C stops)"


def _need_ble() -> None:
    try:
        import bleak  # noqa: F401
        import bumble  # noqa: F401
    except ImportError:
        raise CrdtSyncError("BLE needs the ble extra: pip install 'crdt-sync[ble]'") from None


def _need_zeroconf() -> None:
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        raise CrdtSyncError("the LAN needs the lan extra: pip install 'crdt-sync[lan]'") from None


def run_sync(args: argparse.Namespace, out: Output) -> None:
    _need_extra()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from crdt_sync.transports.relay import sync_session
    from crdt_sync.transports.websocket import ConnectFailed, sync_url

    try:
        sync_url(args.relay)
    except ValueError as exc:  # before anything is opened: a mistyped URL is a usage error
        raise UsageError(f"--relay {args.relay!r}: {exc}") from None
    with open_replica(args) as replica:
        for space in args.spaces:
            replica.keep(space)
        spaces = args.spaces or None
        if not replica.spaces():
            raise sync_report.no_spaces(args.relay)
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


def _log_event(out: Output, transport: str, event: Any) -> None:
    out.err.print(f"[dim]{transport} {type(event).__name__}[/] {event}", highlight=False)
