"""Measuring instruments for sync benchmarks: our sessions flight by flight, and y-protocols.

:func:`drive` runs two in-process :class:`~crdt_sync.protocol.Session` objects and delivers
their frames in *flights*: every frame produced in answer to the previous flight forms the
next one, so a flight is one one-way trip and ``round trips = flights / 2``. :class:`YSync`
runs y-protocols (pycrdt's implementation) between two replicas of a document. Both measure
bytes and in-process time only: no network, no transport framing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Any

from ._harness import BenchmarkError

if TYPE_CHECKING:  # imported lazily at run time, so a parent process needs neither
    from pycrdt import Doc

    from crdt_sync.protocol import Session, SyncHost

#: A session that needs more flights than this is not converging: a protocol bug.
MAX_FLIGHTS = 10_000
HANDSHAKE = ("HELLO", "AUTH", "SPACES")


# -- our protocol, flight by flight --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SyncRun:
    """One crdt-sync session between A and B, as delivered in flights."""

    flights: int
    handshake_flights: int  # flights before the first HAVE
    data_flight: int  # the flight that delivered the last ENVELOPES (0: none)
    a_to_b: int  # bytes of every frame
    b_to_a: int
    a_to_b_sync: int  # bytes after the handshake: HAVE, ENVELOPES, ACK, BYE
    b_to_a_sync: int
    frames: dict[str, int]  # per message type, both directions
    type_bytes: dict[str, int]  # bytes per message type, both directions
    envelopes: int
    edits: int  # Yjs updates (one per local transaction and entity) inside the envelopes
    yjs_bytes: int  # their bytes
    payload_bytes: int  # the envelopes' payloads (CBOR around the updates, HLC per update)
    seconds: float  # the whole exchange, in-process (no network)
    a_seconds: float  # inside A's Session.receive calls (its SQLite reads and writes included)
    b_seconds: float

    @property
    def total(self) -> int:
        return self.a_to_b + self.b_to_a

    @property
    def sync_total(self) -> int:
        return self.a_to_b_sync + self.b_to_a_sync

    @property
    def round_trips(self) -> float:
        return self.flights / 2

    @property
    def sync_round_trips(self) -> float:
        """From the first flight after the handshake (HAVE) to the last frame (BYE)."""
        return (self.flights - self.handshake_flights) / 2

    @property
    def data_round_trips(self) -> float:
        """From HAVE until B holds every missing envelope."""
        return max(0, self.data_flight - self.handshake_flights) / 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total, "sync_total": self.sync_total,
                               "round_trips": self.round_trips, "sync_round_trips": self.sync_round_trips,
                               "data_round_trips": self.data_round_trips}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyncRun:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


Frame = tuple[int, bool, bytes]  # (flight, sent by A, frame)


def drive(a: SyncHost, b: SyncHost, on_flight: Callable[[], None] | None = None) -> SyncRun:
    """Sync replicas ``a`` and ``b`` through two sessions until both have said or heard BYE.

    Like ``transports.driver``, a side that is synced says BYE; unlike it, nothing waits on
    timers, so the flight count is the protocol's own, with zero latency and no loss.
    """
    from crdt_sync.protocol import Session
    from crdt_sync.protocol.messages import E_NORMAL

    spent = {True: 0.0, False: 0.0}  # seconds inside receive() of A (True) and B (False)
    t0 = perf_counter()
    sa, sb = Session(a, monotonic()), Session(b, monotonic())
    sending = [(True, f) for f in sa.start()] + [(False, f) for f in sb.start()]
    log: list[Frame] = []
    flight = 0
    while sending:
        flight += 1
        if flight > MAX_FLIGHTS:
            raise BenchmarkError(f"the sessions did not finish in {MAX_FLIGHTS} flights")
        log += [(flight, by_a, f) for by_a, f in sending]
        replies: list[tuple[bool, bytes]] = []
        for by_a, frame in sending:
            receiver = sb if by_a else sa
            t = perf_counter()
            replies += [(not by_a, g) for g in receiver.receive(frame, monotonic())]
            spent[not by_a] += perf_counter() - t
        for is_a, session in ((True, sa), (False, sb)):
            if session.synced and session.closed is None:  # one-shot sync: say BYE
                replies += [(is_a, g) for g in session.close(monotonic())]
        sending = replies
        if on_flight is not None:
            on_flight()
    seconds = perf_counter() - t0
    for name, session in (("A", sa), ("B", sb)):
        if session.closed is None or session.closed.code != E_NORMAL:
            raise BenchmarkError(f"session of {name} ended with {session.closed}")
    return _summarise(log, seconds, spent[True], spent[False], sa, sb)


def _summarise(log: list[Frame], seconds: float, a_seconds: float, b_seconds: float,
               sa: Session, sb: Session) -> SyncRun:
    """Classify the frames (after the clock stopped: decoding them is not the protocol's cost).
    SEALED frames are counted by the type of the frame inside (opened with the receiver's
    link), their bytes as they were on the wire."""
    from crdt_sync.payload import decode_payload
    from crdt_sync.protocol.link import SEALED_HEAD
    from crdt_sync.protocol.messages import Envelopes, decode
    from crdt_sync.space_crypto import payload_kind

    sent = Counter[str]()
    frames = Counter[str]()
    type_bytes = Counter[str]()
    first_have = data_flight = 0
    envelopes = edits = yjs = payload = 0
    for flight, by_a, frame in log:
        link = (sb if by_a else sa).link
        msg = decode(link.inspect(frame) if link is not None and frame[:2] == SEALED_HEAD else frame)
        name = type(msg).__name__.upper()
        frames[name] += 1
        type_bytes[name] += len(frame)
        way = "a_to_b" if by_a else "b_to_a"
        sent[way] += len(frame)
        if name not in HANDSHAKE:
            sent[way + "_sync"] += len(frame)
        if name == "HAVE" and not first_have:
            first_have = flight
        if isinstance(msg, Envelopes):
            data_flight = max(data_flight, flight)
            for env in msg.envelopes:
                # (an encrypted payload, kind 3, is not opened here: its edits are not counted)
                items = [] if payload_kind(env.payload) != 2 else [
                    it for *_, its in decode_payload(env.payload) for it in its]
                envelopes += 1
                edits += len(items)
                yjs += sum(len(update) for _, update in items)
                payload += len(env.payload)
    return SyncRun(log[-1][0], max(0, first_have - 1), data_flight, sent["a_to_b"], sent["b_to_a"],
                   sent["a_to_b_sync"], sent["b_to_a_sync"], dict(frames), dict(type_bytes), envelopes,
                   edits, yjs, payload, seconds, a_seconds, b_seconds)


# -- y-protocols, as pycrdt implements them ------------------------------------------------
@dataclass
class YSync:
    """Bytes and time of y-protocols sync between replicas of documents, summed over documents.

    Both sides send SyncStep1 (their state vector) at once and answer the other's with
    SyncStep2 (``get_update(state_vector)``), as y-websocket does on connect: one round trip.
    The one-way part is B's SyncStep1 and A's answer. Bytes are y-protocols messages
    (message type, sync step, varUint8Array); given a document ``name``, each also carries it
    as a varString, as servers that multiplex many documents on one connection do
    (Hocuspocus). Transport framing (a WebSocket header per message) is left out of both
    sides of every comparison.
    """

    docs: int = 0
    step1_b: int = 0  # B -> A: B's state vector
    step2_a: int = 0  # A -> B: what B lacks
    step1_a: int = 0  # A -> B
    step2_b: int = 0  # B -> A
    one_way_seconds: float = 0.0
    seconds: float = 0.0

    @property
    def a_to_b(self) -> int:
        return self.step2_a + self.step1_a

    @property
    def b_to_a(self) -> int:
        return self.step1_b + self.step2_b

    @property
    def one_way(self) -> int:
        return self.step1_b + self.step2_a

    def exchange(self, doc_a: Doc[Any], doc_b: Doc[Any], name: str | None = None) -> None:
        """Sync one document both ways and add its bytes and time to the totals."""
        from pycrdt import create_sync_message, handle_sync_message, write_var_uint

        t0 = perf_counter()
        s1_b = create_sync_message(doc_b)
        s2_a = handle_sync_message(s1_b[1:], doc_a)
        t1 = perf_counter()
        s1_a = create_sync_message(doc_a)
        s2_b = handle_sync_message(s1_a[1:], doc_b)
        t2 = perf_counter()
        if s2_a is None or s2_b is None:
            raise BenchmarkError("y-protocols gave no SyncStep2 answer to a SyncStep1")
        handle_sync_message(s2_a[1:], doc_b)
        t3 = perf_counter()
        handle_sync_message(s2_b[1:], doc_a)
        t4 = perf_counter()
        prefix = 0 if name is None else len(write_var_uint(len(name.encode()))) + len(name.encode())
        self.docs += 1
        self.step1_b += prefix + len(s1_b)
        self.step2_a += prefix + len(s2_a)
        self.step1_a += prefix + len(s1_a)
        self.step2_b += prefix + len(s2_b)
        self.one_way_seconds += (t1 - t0) + (t3 - t2)
        self.seconds += t4 - t0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"a_to_b": self.a_to_b, "b_to_a": self.b_to_a, "one_way": self.one_way}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> YSync:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def same_state(doc_a: Doc[Any], doc_b: Doc[Any]) -> bool:
    """B holds everything A has: A's diff against B's state is A's bare delete set."""
    return bool(doc_a.get_update(doc_b.get_state()) == doc_a.get_update(doc_a.get_state()))


