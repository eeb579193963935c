"""One daemon (``transports.daemon.Peer``, what ``crdt-sync peer`` runs) in a process of its
own, driven line by line over stdin so a test waits on its output, never on time:

* ``want N``: print ``have N`` once the space holds N envelopes beyond ``share``'s set-up;
* ``put ID``: write one entity (``equipment/ID``), sealed at once, and print ``put ID``;
* ``ble``: print ``ble N``, N the dials of its BLE transport that waited out the connect timeout;
* ``synced N``: print ``synced N held H`` once N of its sessions said the space was synced
  (``SpaceSynced``), H the envelopes it then holds of the space (the non-member's signal);
* stdin closed: leave the daemon (goodbyes said) and exit 0.

It prints ``ready PORT`` (the LAN port, or 0) once every transport runs. Options: ``--ble
SPEC --ble-role ROLE``, ``--lan-port N`` (listen on loopback), ``--peer PORT`` (dial a
loopback LAN listener), ``--relay URL``, ``--fill N`` (N entities written before it starts).
Every wait is bounded by ``--limit``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.protocol.session import RELIABLE_LINK
from crdt_sync.transports.daemon import Peer
from tests.helpers import SHARED
from tests.sync_helpers import fill

LOOP = "127.0.0.1"


async def lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def main(args: argparse.Namespace) -> int:
    with Replica(Path(args.data), seal_interval=0) as replica:
        space = args.space
        if args.fill:
            fill(replica, Path(args.data).name, args.fill, space)
        changed = asyncio.Event()
        unsubscribe = replica.observe(lambda _c: changed.set())
        synced: list[object] = []

        def on_session_event(_transport: str, event: object) -> None:
            from crdt_sync.protocol import SpaceSynced
            if isinstance(event, SpaceSynced):
                synced.append(event)
                changed.set()
        static = [(LOOP, args.peer)] if args.peer else []
        lan = args.lan_port is not None or bool(static)
        try:
            async with Peer(replica, ble=args.ble, ble_role=args.ble_role, relay=args.relay,
                            interfaces=[LOOP] if lan else [], static_peers=static,
                            lan_port=args.lan_port or 0, config=RELIABLE_LINK,
                            on_session_event=on_session_event,
                            transports=[_lan_listener(replica, args.lan_port)]
                            if args.lan_port is not None else []) as peer:
                lan_t = peer.lan_transport
                print("ready", lan_t.port if lan_t is not None else 0, flush=True)
                stdin = await lines()
                while line := await stdin.readline():
                    verb, _, arg = line.decode().strip().partition(" ")
                    if verb == "want":
                        want = int(arg)
                        async with asyncio.timeout(args.limit):
                            while sum(replica.version_vector(space).values()) - SHARED < want:
                                changed.clear()
                                await changed.wait()
                        print("have", want, flush=True)
                    elif verb == "synced":
                        async with asyncio.timeout(args.limit):
                            while len(synced) < int(arg):
                                changed.clear()
                                await changed.wait()
                        held = sum(replica.version_vector(space).values())
                        print("synced", arg, "held", held, flush=True)
                    elif verb == "ble":  # the BLE transport's dials that timed out
                        ble = [t for t in peer.transports if t.name == "ble"]
                        print("ble", sum(getattr(t, "connect_timeouts", 0) for t in ble), flush=True)
                    elif verb == "put":
                        replica.space(space).put("equipment", arg, {"status": "leaking"})
                        replica.seal()
                        print("put", arg, flush=True)
            return 0
        except TimeoutError:
            have = sum(replica.version_vector(space).values()) - SHARED
            print("timeout", have, flush=True)
            return 1
        finally:
            unsubscribe()


def _lan_listener(replica: Replica, port: int | None) -> object:
    """A LAN listener on loopback that dials nobody (the ``listener`` of the daemon tests)."""
    from crdt_sync.transports.interface import LinkServer, ManagedTransport
    from crdt_sync.transports.lan import LanTransport

    def build(serve: LinkServer) -> ManagedTransport:
        return LanTransport(replica, [LOOP], mdns=False, config=RELIABLE_LINK, port=port or 0,
                            serve=serve)
    return build


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("space")
    parser.add_argument("--ble")
    parser.add_argument("--ble-role", default="both")
    parser.add_argument("--lan-port", type=int)
    parser.add_argument("--peer", type=int)
    parser.add_argument("--relay", action="append", default=[])
    parser.add_argument("--fill", type=int, default=0)
    parser.add_argument("--limit", type=float, default=120.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
