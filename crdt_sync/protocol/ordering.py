"""Which frames a session makes must wait for the host's commit (:class:`CommitOrder`)."""

from __future__ import annotations

import enum

from .messages import T_QUARANTINED, MessageType, peek_type


class CommitOrder(enum.Enum):
    """When a frame may leave relative to the host's commit (``Hooks.durable`` in the driver).

    A relay must not ACK envelopes before they are on disk; frames that claim nothing about
    what the host stored need not wait for it. Order still matters to the peer: ENVELOPES
    only make sense after HAVE, and BYE and ERROR come last.
    """

    #: Claims nothing about the store (HELLO, AUTH, SPACES, ENVELOPES, PING, PONG): goes at
    #: once, unless a barrier before it is waiting.
    FREE = enum.auto()
    #: Claims what the host stored (ACK, QUARANTINED): waits for the commit pending when it
    #: was made.
    AFTER_COMMIT = enum.auto()
    #: Waits like AFTER_COMMIT and holds every frame after it (HAVE, ERROR, BYE).
    BARRIER = enum.auto()


_COMMIT_ORDER = {MessageType.HELLO: CommitOrder.FREE, MessageType.AUTH: CommitOrder.FREE,
                 MessageType.SPACES: CommitOrder.FREE, MessageType.ENVELOPES: CommitOrder.FREE,
                 MessageType.PING: CommitOrder.FREE, MessageType.PONG: CommitOrder.FREE,
                 MessageType.ACK: CommitOrder.AFTER_COMMIT, MessageType.HAVE: CommitOrder.BARRIER,
                 MessageType.ERROR: CommitOrder.BARRIER, MessageType.BYE: CommitOrder.BARRIER,
                 T_QUARANTINED: CommitOrder.AFTER_COMMIT, MessageType.FORK_PROOF: CommitOrder.FREE,
                 MessageType.CLOCK_SKEW: CommitOrder.FREE, MessageType.SNAPSHOT: CommitOrder.FREE,
                 # A verdict claims what the host stored (a relay's "stored").
                 MessageType.SNAPSHOT_ACK: CommitOrder.AFTER_COMMIT,
                 # Already sealed, so its content is not known here: the strictest order. (The
                 # driver routes frames before it seals them: see Session.defer_sealing.)
                 MessageType.SEALED: CommitOrder.BARRIER}


def commit_order(frame: bytes) -> CommitOrder:
    """When ``frame`` (one a session made) may leave relative to the host's commit."""
    kind = peek_type(frame)
    return CommitOrder.AFTER_COMMIT if kind is None else _COMMIT_ORDER[kind]
