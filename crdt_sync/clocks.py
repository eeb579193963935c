"""The clock rules: one range for every clock, and how far ahead a received clock may be.

Devices and the relay apply these same functions (docs/PROTOCOL.md, "Clocks"). Each is pure:
the caller passes the values and, for the skew, its own wall clock.

- :func:`check_envelope`: an envelope's HLC is in the range (``0 <= hlc < MAX_HLC``). The
  relay checks it too: it is the one clock outside the payload.
- :func:`check_items`: each payload item's HLC is in the range and not above its envelope's
  (devices only: they decode payloads; sealing stamps an envelope with its latest item).
- :func:`check_registers`: each register a received update writes has a clock in the range
  and not above its envelope's HLC (devices only).
- :func:`ahead`: how far an envelope's HLC is ahead of the receiver's wall clock plus the
  allowed skew; an envelope that is ahead is held back (not stored, not acknowledged) until
  the receiver's clock catches up.

A refusal is a :class:`~crdt_sync.errors.Rejected` of a signature-valid envelope, with the
reason ``clock-range``, ``item-clock`` or ``register-clock``; holding back is not a refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cbor2

from .envelope import Envelope
from .errors import Rejected
from .hlc import COUNTER_BITS, MAX_HLC
from .identity import device_id

CLOCK_RANGE = "clock-range"
ITEM_CLOCK = "item-clock"
REGISTER_CLOCK = "register-clock"


def in_range(hlc: int) -> bool:
    """Whether ``hlc`` is a clock value of the range: an int with ``0 <= hlc < MAX_HLC``."""
    return type(hlc) is int and 0 <= hlc < MAX_HLC


def check_envelope(env: Envelope) -> None:
    """The envelope's HLC is in the range (devices and relay)."""
    if not in_range(env.hlc):
        raise Rejected(CLOCK_RANGE, f"{env.author} seq {env.seq}: hlc {env.hlc} is outside the "
                                    f"clock range 0..2**62-1")


def check_items(env: Envelope, items: Iterable[int]) -> None:
    """Each item HLC of the envelope's payload is in the range and at most the envelope's."""
    for hlc in items:
        if not in_range(hlc):
            raise Rejected(CLOCK_RANGE, f"{env.author} seq {env.seq}: an item's hlc {hlc} is "
                                        f"outside the clock range 0..2**62-1")
        if hlc > env.hlc:
            raise Rejected(ITEM_CLOCK, f"{env.author} seq {env.seq}: an item's hlc {hlc} is "
                                       f"above its envelope's {env.hlc}")


def check_registers(env: Envelope, clocks: Iterable[int]) -> None:
    """The clocks of the registers an update of ``env`` wrote are at most its HLC (which
    :func:`check_envelope` put in the range)."""
    for hlc in clocks:
        if not 0 <= hlc <= env.hlc:
            raise Rejected(REGISTER_CLOCK, f"{env.author} seq {env.seq}: a register clock {hlc} "
                                           f"is above the envelope's hlc {env.hlc}")


#: The largest allowed skew a setting may ask for (a year): beyond it the bound on received
#: clocks would mean nothing.
MAX_SKEW_SETTING_MS = 366 * 24 * 3600 * 1000


def check_skew(seconds: float) -> int:
    """A ``max_clock_skew`` setting (seconds) as milliseconds; ValueError unless it is a
    number from 1 ms to a year."""
    if not (isinstance(seconds, (int, float)) and 0.001 <= seconds <= MAX_SKEW_SETTING_MS / 1000):
        raise ValueError(f"max_clock_skew = {seconds!r} seconds must be from 0.001 to "
                         f"{MAX_SKEW_SETTING_MS // 1000} (a year)")
    return int(seconds * 1000)


def ahead(hlc: int, wall_ms: int, max_skew_ms: int) -> int:
    """How many milliseconds ``hlc`` is ahead of ``wall_ms`` when that is more than
    ``max_skew_ms`` (the envelope is then held back), else 0. A clock outside the range is
    never held back: :func:`check_envelope` refuses it."""
    if not in_range(hlc):
        return 0
    ahead_ms = (hlc >> COUNTER_BITS) - wall_ms
    return ahead_ms if ahead_ms > max_skew_ms else 0


def hold_back(wires: list[bytes], wall_ms: int, max_skew_ms: int,
              have: Mapping[str, int]) -> tuple[list[bytes], int, int]:
    """Of envelope wires in causal order (a bundle's), those to take now: each author's
    chain up to its first new envelope (its seq above ``have``, the receiver's version
    vector) whose HLC is ahead (see :func:`ahead`); that one and the author's later ones are
    held back. Returns ``(kept, held back, largest ahead_ms)``.

    A wire that does not decode is kept (the receiver refuses it with the reason), and so is
    one the receiver holds a seq of already (a duplicate or a fork: the chain rules judge it).
    """
    kept: list[bytes] = []
    held: set[bytes] = set()
    most = 0
    for wire in wires:
        try:
            items = cbor2.loads(wire)
            key, seq, hlc = items[2], items[3], items[5]
            ahead_ms = ahead(hlc, wall_ms, max_skew_ms) if type(hlc) is int else 0
            if ahead_ms and key not in held and seq <= have.get(device_id(key), 0):
                ahead_ms = 0
        except Exception:  # trust boundary: open_envelope names what is wrong with it
            kept.append(wire)
            continue
        if key in held or ahead_ms:
            held.add(key)
            most = max(most, ahead_ms)
            continue
        kept.append(wire)
    return kept, len(wires) - len(kept), most


__all__ = ["CLOCK_RANGE", "ITEM_CLOCK", "MAX_SKEW_SETTING_MS", "REGISTER_CLOCK", "ahead", "check_envelope",
           "check_items", "check_registers", "check_skew", "hold_back", "in_range"]
