"""The sync protocol: CBOR messages and the sans-I/O session (see docs/PROTOCOL.md)."""

from .messages import MAX_FRAME, PROTOCOL_VERSION, ErrorCode, MessageType, ProtocolViolation
from .session import (
    Authenticated,
    Closed,
    Event,
    Quarantined,
    Received,
    Session,
    SessionConfig,
    SpaceSynced,
    SyncHost,
)

__all__ = ["MAX_FRAME", "PROTOCOL_VERSION", "Authenticated", "Closed", "ErrorCode", "Event", "MessageType",
           "ProtocolViolation", "Quarantined", "Received", "Session", "SessionConfig", "SpaceSynced",
           "SyncHost"]
