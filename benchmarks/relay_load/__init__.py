"""Relay load benchmark: many device connections through a relay, side by side with
pycrdt-websocket's server under the same load.

    python -m crdt_sync.benchmarks.relay_load [--devices N] [--team-size N] [--typing-devices N]
                                    [--duration S] [--quick] [--json] [--profile py-spy|cprofile]

The load: ``--devices`` concurrent device connections; ``--typing-devices`` of them share one
space and each types ``--typing-rate`` edits per second; the others are in spaces of
``--team-size`` devices (field teams), each editing ``--team-rate`` times per second. Every
edit is delivered to every other member of its space.

Each server runs in a process of its own (its RSS and CPU sampled with psutil); the load
generator runs in ``--generators`` other processes (one by default: the machine has two
cores). The generator speaks each server's own protocol over a lean asyncio WebSocket client
and does no work per message that it can do in advance:

* crdt-sync relay: every device has a key pair and a chain of envelopes signed before the
  run; it does the real handshake (a :class:`~crdt_sync.protocol.Session`), then sends its
  pre-encoded ENVELOPES frames, and ACKs what it receives with its whole version vector, as
  the session would. "Accepted" means ACKed by the relay, which happens after the group
  commit (fsync). Before the devices connect, one session per 512 spaces stores each
  device's first envelope (the devices have synced before), so sessions refer to authors by
  table index, as they do in steady state.
* pycrdt-websocket: its ``WebsocketServer`` behind uvicorn through its ``ASGIServer`` (as its
  documentation shows); each space is a room (one Yjs document); each device is a y-websocket
  client that answers the sync handshake and sends SYNC_UPDATE messages pre-computed from a
  Yjs document of its own. Its server applies each update to the room's document in memory
  and broadcasts it to every client of the room, the sender included: that echo is counted
  as "accepted" (applied in RAM: not durable; nothing is stored, unless ``--servers``
  names ``pycrdt-websocket-ystore``, its SQLiteYStore).

The Yjs update of an edit is the same bytes in both: the payload of the crdt-sync envelope
carries it. Latency is from the moment the edit was scheduled (so a backlog at the sender
counts) to its arrival at each other member of the space; an edit not delivered by the end
of the drain counts as infinitely late. Only edits scheduled inside the measured window
(after ``--warmup``) count.

Layout: ``_cli`` (options, which process this is), ``_load`` (the load, the servers' names, edit
markers and Yjs updates, the latency histogram), ``_wsclient`` (the lean WebSocket client),
``_devices`` (the simulated devices), ``_generator`` (the load generator process), ``_servers``
(starting and stopping the servers, crdt-sync-baseline included, pycrdt-websocket's server
process, RSS/CPU sampling, py-spy), ``_run`` (one server's run, from the parent), ``_measure``
(its summary and profiles) and ``_report`` (tables or JSON).
"""

from ._cli import main
from ._devices import (
    WINDOW,
    Device,
    MemoryHost,
    RelayDevice,
    Space,
    Stats,
    YDevice,
    relay_devices,
    seed_relay,
    y_devices,
)
from ._generator import CONNECT_CONCURRENCY, CONNECT_TIMEOUT, generate, ramp
from ._load import (
    LISTENING,
    MODULE,
    OURS,
    SERVERS,
    WAIT_LIMIT,
    Histogram,
    Load,
    device_seed,
    marker,
    parse_marker,
    yjs_updates,
)
from ._report import DETAIL_HEADERS, HEADERS
from ._run import run_server
from ._servers import Sample, Sampler, wait_quiet
from ._wsclient import WsConn

__all__ = [
    "CONNECT_CONCURRENCY", "CONNECT_TIMEOUT", "DETAIL_HEADERS", "HEADERS", "LISTENING", "MODULE", "OURS",
    "SERVERS", "WAIT_LIMIT", "WINDOW", "Device", "Histogram", "Load", "MemoryHost", "RelayDevice",
    "Sample", "Sampler", "Space", "Stats", "WsConn", "YDevice", "device_seed", "generate", "main",
    "marker", "parse_marker", "ramp", "relay_devices", "run_server", "seed_relay", "wait_quiet",
    "y_devices", "yjs_updates",
]
