"""BLE framing: protocol frames as chunks that fit one attribute value, with credits.

Sans-I/O: :class:`ChunkChannel` is the state of one BLE connection's framing, both ways. The
link (:mod:`._link`) hands it the chunks that arrive (:meth:`ChunkChannel.feed`, push-style)
and writes the chunks it returns (:meth:`ChunkChannel.outgoing`); nothing here waits or
touches a socket. The chunk format is specified in docs/PROTOCOL.md, "BLE framing":

* ``OPEN``   ``10 | version u8 | window u8 | max_chunk u16``: the first chunk each side sends
  on a connection; ``window`` is the credit it grants (in chunks), ``max_chunk`` the longest
  chunk it accepts.
* ``CREDIT`` ``20 | count u8``: ``count`` more chunks may be sent.
* ``DATA``   ``30 | flags | seq u8 | [length u32 if FIRST] | slice of the body``, where a
  frame's body is the frame followed by its CRC-32; flags bit 0 FIRST, bit 1 LAST.

A receiver never needs more than one frame's body (bounded by ``max_frame``) plus the window
of chunks in flight; a sender never sends a DATA chunk without credit. Resumption after a
reconnect is a new channel: sequence numbers and credit start over, a half-received frame
is refused (``close``), and the sync session above resumes from its last ACK.
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass

from crdt_sync.protocol import MAX_FRAME

from ..base import TransportError

#: The framing version in OPEN.
FRAMING_VERSION = 1
OPEN, CREDIT, DATA = 0x10, 0x20, 0x30
FIRST, LAST = 0x01, 0x02
#: An attribute value is at most 512 bytes (ATT); MTU 23 leaves 20.
MIN_CHUNK, MAX_CHUNK = 20, 512
OPEN_SIZE = 5
DATA_HEAD = 3
LENGTH_SIZE = 4
CRC_SIZE = 4
#: Chunks in flight by default: 32 x 512 B = 16 KiB.
DEFAULT_WINDOW = 32
#: Complete frames held for the reader before credit is withheld.
INBOX_FRAMES = 8
#: Refusals kept for status.
MAX_REFUSALS = 32


class FramingError(TransportError, ValueError):
    """A frame cannot be framed (too large), or a chunk broke the framing rules."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A whole frame, reassembled and checked."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """A chunk or a frame refused, with the reason; nothing of it is delivered."""

    reason: str


ChunkEvent = Frame | Refused


def chunk_size_for(mtu: int, ll_payload: int | None = None) -> int:
    """The chunk for an ATT MTU: ``mtu - 3``, at most one attribute value (512).

    With the link layer's payload size (``ll_payload``: 27, or up to 251 with data length
    extension), a chunk that does not fit one LL packet is cut to fill whole packets with its
    ATT and L2CAP headers (7 bytes): at MTU 517 and 251-byte packets, 495 bytes in two
    packets instead of 512 in three.
    """
    limit = max(MIN_CHUNK, min(mtu - 3, MAX_CHUNK))
    if ll_payload is None or limit + 7 <= ll_payload:
        return limit
    aligned = (limit + 7) // ll_payload * ll_payload - 7
    return aligned if aligned >= MIN_CHUNK else limit


def open_chunk(window: int, max_chunk: int) -> bytes:
    if not 1 <= window <= 255 or not MIN_CHUNK <= max_chunk <= MAX_CHUNK:
        raise ValueError(f"window 1..255 and max_chunk {MIN_CHUNK}..{MAX_CHUNK}")
    return bytes([OPEN, FRAMING_VERSION, window]) + max_chunk.to_bytes(2, "big")


def credit_chunk(count: int) -> bytes:
    if not 1 <= count <= 255:
        raise ValueError("a CREDIT grants 1..255 chunks")
    return bytes([CREDIT, count])


def split(frame: bytes, chunk: int, seq: int = 0) -> list[bytes]:
    """``frame`` as DATA chunks of at most ``chunk`` bytes, numbered from ``seq`` (mod 256)."""
    if chunk < MIN_CHUNK:
        raise ValueError(f"chunks are at least {MIN_CHUNK} bytes")
    body = frame + zlib.crc32(frame).to_bytes(CRC_SIZE, "big")
    out: list[bytes] = []
    at = 0
    while True:
        first = at == 0
        room = chunk - DATA_HEAD - (LENGTH_SIZE if first else 0)
        piece = body[at:at + room]
        at += len(piece)
        flags = (FIRST if first else 0) | (LAST if at == len(body) else 0)
        head = bytes([DATA, flags, (seq + len(out)) & 0xFF])
        out.append(head + (len(frame).to_bytes(LENGTH_SIZE, "big") if first else b"") + piece)
        if at == len(body):
            return out


@dataclass(slots=True)
class _Partial:
    length: int
    body: bytearray


class ChunkChannel:
    """The framing of one connection, both directions: one owner of seqs, credits, buffers.

    Args:
        max_chunk: the longest chunk this side accepts (and sends at most).
        window: the credit this side grants, in chunks.
        max_frame: the longest frame accepted or sent.
        inbox_frames: complete frames the reader may leave untaken before credit stops.
    """

    def __init__(self, max_chunk: int, *, window: int = DEFAULT_WINDOW, max_frame: int = MAX_FRAME,
                 inbox_frames: int = INBOX_FRAMES) -> None:
        self.max_chunk = max_chunk
        self.window = window
        self.max_frame = max_frame
        self.inbox_frames = inbox_frames
        self.refusals: deque[str] = deque(maxlen=MAX_REFUSALS)
        self.refused = 0
        self.chunks_in = self.chunks_out = 0
        self._control: deque[bytes] = deque()
        self._open_sent = False  # OPEN goes first, built when first asked (max_chunk may change)
        # sending
        self._peer_open = False
        self._peer_window = 0
        self._peer_chunk = MIN_CHUNK
        self._credit = 0
        self._send_seq = 0
        self._frames: deque[bytes] = deque()
        self._queued_bytes = 0
        self._chunks: deque[bytes] = deque()  # the frame being sent, as chunks left
        # receiving
        self._recv_seq = 0
        self._last = b""
        self._partial: _Partial | None = None
        self._skipping = False  # after a refusal inside a frame: drop until the next FIRST
        self._granted = window  # credit the peer holds
        self._consumed = 0  # chunks received and not yet credited back
        self._undelivered = 0  # frames handed out and not yet taken by the reader

    # -- sending --------------------------------------------------------------------------------
    @property
    def opened(self) -> bool:
        """Whether the peer's OPEN arrived (before it, no DATA may go)."""
        return self._peer_open

    @property
    def credit(self) -> int:
        return self._credit

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames queued and not yet fully handed to :meth:`outgoing`."""
        return self._queued_bytes

    def send(self, frame: bytes) -> None:
        """Queue ``frame``; it goes out as credit allows. Raises :class:`FramingError` if too large."""
        if len(frame) > self.max_frame:
            raise FramingError(f"a frame of {len(frame)} bytes exceeds the BLE framing limit of "
                               f"{self.max_frame}")
        self._frames.append(frame)
        self._queued_bytes += len(frame)

    def outgoing(self) -> list[bytes]:
        """The chunks that may be written now: control chunks, then DATA within credit."""
        out = [] if self._open_sent else [open_chunk(self.window, self.max_chunk)]
        self._open_sent = True
        out += self._control
        self._control.clear()
        while self._peer_open and self._credit > 0:
            if not self._chunks:
                if not self._frames:
                    break
                frame = self._frames.popleft()
                self._queued_bytes -= len(frame)
                self._chunks.extend(split(frame, min(self.max_chunk, self._peer_chunk), self._send_seq))
            out.append(self._chunks.popleft())
            self._send_seq = (self._send_seq + 1) & 0xFF
            self._credit -= 1
        self.chunks_out += len(out)
        return out

    @property
    def idle(self) -> bool:
        """Nothing left to send (no control chunk, no frame queued or half sent)."""
        return self._open_sent and not self._control and not self._frames and not self._chunks

    # -- receiving ------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> list[ChunkEvent]:
        """Take one chunk as it arrived; the frames it completes and what was refused.

        Every chunk but an accepted OPEN or CREDIT uses one credit, damaged or not, so that a
        damaged chunk leaks none (a DATA chunk with a flipped bit may look like anything).
        """
        self.chunks_in += 1
        kind = chunk[0] if chunk else -1
        if kind in (OPEN, CREDIT):
            events = self._on_open(chunk) if kind == OPEN else self._on_credit(chunk)
            if not events:
                return events
            if self._granted == 0:
                return events
        elif self._granted == 0:
            return [self._refuse("chunk sent without credit")]
        elif not chunk:
            events = [self._refuse("empty chunk")]
        elif len(chunk) > self.max_chunk:
            events = [self._refuse(f"chunk of {len(chunk)} bytes exceeds the {self.max_chunk}-byte "
                                   f"limit this side announced")]
        elif kind != DATA:
            events = [self._refuse(f"unknown chunk type 0x{kind:02x}")]
        elif len(chunk) < DATA_HEAD or chunk[1] & ~(FIRST | LAST):
            events = [self._refuse("malformed DATA head")]
        elif chunk[2] == (self._recv_seq - 1) & 0xFF and self._last == chunk:
            # The chunk just taken, again: no credit was spent on it and no state changes.
            return [self._refuse(f"duplicate chunk (seq {chunk[2]})")]
        else:
            self._last = chunk
            events = self._data(chunk[1], chunk[2], chunk[DATA_HEAD:])
        self._granted -= 1
        self._consumed += 1
        self._grant()
        return events

    def taken(self, count: int = 1) -> None:
        """The reader took ``count`` frames handed out by :meth:`feed` (frees inbox credit)."""
        self._undelivered = max(0, self._undelivered - count)
        self._grant()

    def close(self) -> list[Refused]:
        """The connection ended: a half-received frame is refused (the session resends it)."""
        if self._partial is None:
            return []
        got, length = len(self._partial.body), self._partial.length
        self._partial = None
        return [self._refuse(f"frame incomplete: the link dropped at {got} of {length + CRC_SIZE} "
                             f"bytes")]

    def _on_open(self, chunk: bytes) -> list[ChunkEvent]:
        if len(chunk) != OPEN_SIZE:
            return [self._refuse(f"OPEN of {len(chunk)} bytes (it has {OPEN_SIZE})")]
        if self._peer_open:
            return [self._refuse("a second OPEN on one connection")]
        version, window, max_chunk = chunk[1], chunk[2], int.from_bytes(chunk[3:5], "big")
        if version != FRAMING_VERSION:
            return [self._refuse(f"framing version {version} (this side speaks {FRAMING_VERSION})")]
        if window == 0 or not MIN_CHUNK <= max_chunk <= MAX_CHUNK:
            return [self._refuse(f"OPEN with window {window} and max chunk {max_chunk} "
                                 f"(1..255, {MIN_CHUNK}..{MAX_CHUNK})")]
        self._peer_open, self._peer_window, self._credit = True, window, window
        self._peer_chunk = max_chunk
        return []

    def _on_credit(self, chunk: bytes) -> list[ChunkEvent]:
        if len(chunk) != 2 or chunk[1] == 0:
            return [self._refuse("malformed CREDIT")]
        if not self._peer_open:
            return [self._refuse("CREDIT before OPEN")]
        # More than the window (the peer counted a duplicated or injected chunk as one of
        # ours) is harmless to us: clamped, so credit stays bounded by what the peer announced.
        self._credit = min(self._peer_window, self._credit + chunk[1])
        return []

    def _data(self, flags: int, seq: int, rest: bytes) -> list[ChunkEvent]:
        expected, self._recv_seq = self._recv_seq, (seq + 1) & 0xFF
        events: list[ChunkEvent] = []
        if seq != expected:
            # Out of order: the frame it falls in is lost; resynchronise on the next FIRST.
            self._partial, self._skipping = None, True
            return [self._refuse(f"chunk out of order or duplicated (seq {seq}, expected {expected})")]
        if flags & FIRST:
            if self._partial is not None:
                events.append(self._refuse("frame incomplete: a new frame began before its last chunk"))
            self._partial, self._skipping = None, False
            if len(rest) < LENGTH_SIZE:
                events.append(self._refuse("FIRST chunk too short for its length"))
                self._skipping = True
                return events
            length = int.from_bytes(rest[:LENGTH_SIZE], "big")
            if length > self.max_frame:
                events.append(self._refuse(f"frame of {length} bytes exceeds the limit of "
                                           f"{self.max_frame}"))
                self._skipping = True
                return events
            self._partial = _Partial(length, bytearray())
            rest = rest[LENGTH_SIZE:]
        elif self._partial is None:
            if not self._skipping:
                events.append(self._refuse("chunk of no frame (its FIRST chunk was refused or lost)"))
                self._skipping = True
            return events
        return events + self._extend(self._partial, flags, rest)

    def _extend(self, partial: _Partial, flags: int, rest: bytes) -> list[ChunkEvent]:
        total = partial.length + CRC_SIZE
        if len(partial.body) + len(rest) > total:
            return [self._drop(f"chunk runs past the end of its {partial.length}-byte frame")]
        partial.body += rest
        done = len(partial.body) == total
        if done != bool(flags & LAST):
            return [self._drop(f"frame truncated: LAST chunk at {len(partial.body)} of {total} bytes"
                               if flags & LAST else "frame complete but its chunk is not marked LAST")]
        if not done:
            return []
        self._partial = None
        frame, crc = bytes(partial.body[:partial.length]), bytes(partial.body[partial.length:])
        if zlib.crc32(frame).to_bytes(CRC_SIZE, "big") != crc:
            return [self._refuse(f"frame of {partial.length} bytes damaged (CRC-32 mismatch)")]
        self._undelivered += 1
        return [Frame(frame)]

    def _drop(self, reason: str) -> Refused:
        self._partial, self._skipping = None, True
        return self._refuse(reason)

    def _grant(self) -> None:
        """Give credit back for consumed chunks: in batches, and not while the inbox is full."""
        if self._undelivered >= self.inbox_frames or self._consumed == 0:
            return
        if self._consumed >= max(1, self.window // 4) or self._granted == 0:
            self._control.append(credit_chunk(self._consumed))
            self._granted += self._consumed
            self._consumed = 0

    def _refuse(self, reason: str) -> Refused:
        self.refused += 1
        self.refusals.append(reason)
        return Refused(reason)
