"""Bluetooth LE: chunked framing with credits, a GATT service, and discovery by advertising.

Only the framing is imported here: the radio parts (bumble, bleak) load when a transport is
built (:mod:`._transport`), so a missing Bluetooth stack never breaks LAN or the relay.
"""

from ._framing import ChunkChannel, Frame, FramingError, Refused, chunk_size_for, split

__all__ = ["ChunkChannel", "Frame", "FramingError", "Refused", "chunk_size_for", "split"]
