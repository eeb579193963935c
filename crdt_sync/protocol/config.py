"""A session's limits and timeouts."""

from __future__ import annotations

from dataclasses import dataclass

from .messages import MAX_INNER_FRAME

#: Most bytes of envelopes (their wire forms, larger than the items sent) one ENVELOPES batch
#: holds beyond its first envelope, so that the frame (its head: at most ~32 bytes) fits
#: inside SEALED (protocol 3); one envelope (at most 512 KiB) always fits.
MAX_BATCH_BYTES = MAX_INNER_FRAME - 64


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Batch sizes, the window of unacknowledged batches per space, and the timers."""

    batch_bytes: int = 256 * 1024
    batch_count: int = 1024
    window: int = 4
    handshake_timeout: float = 10.0
    ack_timeout: float = 3.0
    #: Handshake frames and HAVE are resent this often until answered (lossy links).
    resend_interval: float = 1.0
    #: Well-formed frames that arrive before the handshake allows them are dropped (their
    #: senders resend); more than this many is a misbehaving peer.
    max_early_frames: int = 64
    ping_interval: float = 10.0
    dead_after: float = 30.0
    #: A peer that lacks at least this many envelopes a snapshot covers is sent the snapshot
    #: (one that holds nothing of the space, whenever it lacks any): docs/PROTOCOL.md,
    #: "Snapshots in sessions"
    snapshot_lag: int = 1024
    #: Live ACK coalescing (docs/PROTOCOL.md, "Delayed ACKs"): once a space has been synced,
    #: the ACK of an ENVELOPES frame may wait up to this many seconds (0: never waits) and
    #: goes at once when ``ack_every`` frames are waiting; one ACK, of the last batch, covers
    #: them all (ACKs are cumulative). A relay never delays its ACKs (they mean "durable").
    ack_delay: float = 0.0
    ack_every: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.ack_delay <= 1.0 or self.ack_every < 1:
            raise ValueError(f"ack_delay = {self.ack_delay} must be between 0 and 1 s and ack_every = "
                             f"{self.ack_every} at least 1")
        if not 0 < self.batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(f"batch_bytes = {self.batch_bytes} must be between 1 and {MAX_BATCH_BYTES} "
                             "(a batch's frame must fit inside SEALED)")


#: For reliable, ordered links (TCP, WebSocket): nothing is lost while the link is up, so
#: timed resends would only send duplicates (a busy peer reads its ACKs late); a stalled
#: peer is still dropped by ``dead_after`` and the next session resumes from HAVE.
RELIABLE_LINK = SessionConfig(ack_timeout=3600.0, resend_interval=3600.0, ack_delay=0.02)
#: How long a device's live ACKs may wait on a reliable link (``RELIABLE_LINK``).
LIVE_ACK_DELAY = RELIABLE_LINK.ack_delay
