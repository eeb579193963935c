"""The relay's rate limit as flow control: an eager device is paced, not refused.

Each device has two token buckets (``rate_envelopes`` and ``rate_bytes`` per second, bursts
of ten seconds' worth), shared by all its connections. Every ENVELOPES frame a device sends
is charged to them when it arrives, and may drive them below zero: the device is then in
**debt**. While it is, the relay holds back the ACK of each batch until the debt that batch
ran up is paid off (the bucket refilled to zero), on top of the wait for its commit. A
sender keeps at most ``window`` (4) batches per space unacknowledged, so a held ACK stops
it: the device is paced at its rate, with at most one window of batches per space stored
ahead of it. Nothing is refused and nothing is lost. A device whose debt still grows past
:data:`MAX_DEBT_SECONDS` (many spaces or connections at once) is not read until it is back
under it (:meth:`Flow.overdrawn`; the relay's link waits before it hands over a frame).

A device that ignores flow control is refused (ERROR 10), before anything of the frame is
stored: one that sends another batch while ``window`` batches of new envelopes in that space
have no ACK on their way to it. A batch whose envelopes the relay already held is not
counted: a sender retires a batch early when an ACK's version vector covers it (see
``crdt_sync.protocol.session``), and every such batch is all duplicates here. A sender that
keeps the window never trips this: each batch counted is one it still has in flight.

Everything here is called synchronously from the session's host (:meth:`Flow.charge`,
:meth:`Flow.check`, :meth:`Flow.stored`), the driver's commit gate (:meth:`Flow.hold`) and its outbox
(:meth:`Flow.answered`); time comes from ``clock`` and the event loop's timers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from crdt_sync.protocol.messages import MessageType

#: A device's buckets hold this many seconds of its rate (its burst).
BURST_SECONDS = 10.0
#: A device in debt by more than this many seconds of its rate is not read (its frames wait
#: in TCP) until the debt is back under it. Held ACKs pace each space's window; this bounds
#: what many spaces or connections at once can run up.
MAX_DEBT_SECONDS = 10.0


class TokenBucket:
    """``rate`` per second with bursts of ``burst``; time passed in by the caller."""

    __slots__ = ("burst", "level", "rate", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.level, self.updated = rate, burst, burst, now

    def _refill(self, now: float) -> None:
        self.level = min(self.burst, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` if the bucket holds it; False (and nothing taken) if not."""
        self._refill(now)
        if amount > self.level:
            return False
        self.level -= amount
        return True

    def charge(self, amount: float, now: float) -> float:
        """Take ``amount`` even below zero; returns the seconds until the level is back at 0."""
        self._refill(now)
        self.level -= amount
        return max(0.0, -self.level / self.rate)

    def debt(self, now: float) -> float:
        """Seconds until the level is back at 0 (0 when it is not below)."""
        self._refill(now)
        return max(0.0, -self.level / self.rate)

    def full_at(self) -> float:
        """When the bucket will be full again (in the caller's time)."""
        return self.updated + max(0.0, self.burst - self.level) / self.rate


class _Budget:
    """One device's buckets and how many connections use them."""

    __slots__ = ("bytes", "connections", "envelopes")

    def __init__(self, rate_envelopes: float, rate_bytes: float, now: float) -> None:
        self.envelopes = TokenBucket(rate_envelopes, rate_envelopes * BURST_SECONDS, now)
        self.bytes = TokenBucket(rate_bytes, rate_bytes * BURST_SECONDS, now)
        self.connections = 0

    def charge(self, envelopes: int, size: int, now: float) -> float:
        return max(self.envelopes.charge(envelopes, now), self.bytes.charge(size, now))

    def debt(self, now: float) -> float:
        return max(self.envelopes.debt(now), self.bytes.debt(now))

    def full_at(self) -> float:
        return max(self.envelopes.full_at(), self.bytes.full_at())


class Pacer:
    """Every device's budget, and the connections being paced (see the module docstring).

    Args:
        rate_envelopes: envelopes per second and device.
        rate_bytes: envelope bytes per second and device.
        window: the protocol's window of unacknowledged batches per space.
        on_hold: called with the seconds an ACK is held back (metrics).
        clock: monotonic seconds (the event loop's timers must run on the same clock).
    """

    def __init__(self, rate_envelopes: float, rate_bytes: float, window: int,
                 on_hold: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_envelopes, self.rate_bytes, self.window = rate_envelopes, rate_bytes, window
        self.on_hold = on_hold
        self.clock = clock
        self._budgets: dict[str, _Budget] = {}
        self._flows: set[Flow] = set()
        self._released = False
        self._sweep_at = 64  # forget refilled budgets once the map holds this many

    def flow(self) -> Flow:
        """The pacing of one new connection; :meth:`Flow.close` it when the connection ends."""
        flow = Flow(self)
        self._flows.add(flow)
        return flow

    def release(self) -> None:
        """Let every held ACK go now and hold no more (the relay is stopping: its sessions
        say going-away, and the envelopes they acknowledge are committed anyway)."""
        self._released = True
        for flow in list(self._flows):
            flow.release()

    @property
    def released(self) -> bool:
        return self._released

    def budgets(self) -> int:
        """How many devices' budgets are kept (those connected, or not yet refilled)."""
        return len(self._budgets)

    def sweep(self) -> int:
        """Forget the budgets that are full again and belong to no connection; how many are
        kept then (:meth:`attach` sweeps too, amortised)."""
        self._forget_full(self.clock())
        return len(self._budgets)

    def attach(self, device: str, now: float) -> _Budget:
        """The budget of ``device`` for one more of its connections (see :meth:`detach`)."""
        budget = self._budgets.get(device)
        if budget is None:
            if len(self._budgets) >= self._sweep_at:  # amortised: not a scan per connection
                self._forget_full(now)
                self._sweep_at = max(64, 2 * len(self._budgets))
            budget = self._budgets[device] = _Budget(self.rate_envelopes, self.rate_bytes, now)
        budget.connections += 1
        return budget

    def detach(self, flow: Flow, budget: _Budget | None) -> None:
        """A connection ended: it no longer holds ``budget`` (None: it never sent envelopes)."""
        self._flows.discard(flow)
        if budget is not None:
            budget.connections -= 1

    def _forget_full(self, now: float) -> None:
        # A budget outlives its device's connections only until it is full again (a fresh
        # one is the same then): reconnecting does not buy a new burst, and the map holds
        # only devices connected or recently busy, not every device ever seen.
        stale = [d for d, b in self._budgets.items() if b.connections == 0 and b.full_at() <= now]
        for device in stale:
            del self._budgets[device]


class _Hold:
    """One held ACK's gate: done once its timer and the commit it waits for are both done."""

    __slots__ = ("commit", "done", "future", "timer")

    def __init__(self, delay: float, commit: asyncio.Future[None] | None,
                 done: Callable[[_Hold], None]) -> None:
        loop = asyncio.get_running_loop()
        self.done = done  # told once the hold is over
        self.future: asyncio.Future[None] = loop.create_future()
        self.commit = commit
        self.timer: asyncio.TimerHandle | None = loop.call_later(delay, self.expire)
        if commit is not None:
            commit.add_done_callback(self._finish)

    def expire(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._finish()

    def _finish(self, _: object = None) -> None:
        future, commit = self.future, self.commit
        if future.done() or self.timer is not None or (commit is not None and not commit.done()):
            return
        self.done(self)
        if commit is not None and commit.cancelled():
            future.set_exception(RuntimeError("the commit this ACK waited for was cancelled"))
        elif commit is not None and commit.exception() is not None:
            exc = commit.exception()
            assert exc is not None
            future.set_exception(exc)
        else:
            future.set_result(None)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Flow:
    """One connection's pacing: its device's budget, its held ACKs, its unanswered batches."""

    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
        self.device: str | None = None
        self._budget: _Budget | None = None
        self._release_at: float | None = None  # until when this connection's ACKs are held
        self._hold: _Hold | None = None  # the hold for ACKs routed since the last charge
        self._holds: set[_Hold] = set()
        #: one entry per ENVELOPES frame whose ACK has not left yet: (space, had new envelopes)
        self._unanswered: deque[tuple[str, bool]] = deque()
        self._new: dict[str, int] = {}  # per space: unanswered frames that had new envelopes
        self.closed = False

    # -- the session's host ---------------------------------------------------------------
    def charge(self, device: str, envelopes: int, size: int) -> str | None:
        """An ENVELOPES frame arrived: charge it to the device's budget. Never refuses (the
        signature of ``RelayHost``'s ``limit``): an eager device is paced by :meth:`hold`."""
        now = self.pacer.clock()
        if self._budget is None:
            self.device = device
            self._budget = self.pacer.attach(device, now)
        delay = self._budget.charge(envelopes, size, now)
        if delay > 0 and not self.pacer.released:
            self._release_at = now + delay
            self._hold = None  # ACKs from this frame on wait for the new release time
        return None

    def check(self, space: str) -> str | None:
        """Before an ENVELOPES frame of ``space`` is stored: the refusal if its sender
        ignored flow control, else None. ``window`` frames of new envelopes with no ACK on
        the way yet fill the sender's window: nothing else may arrive until one leaves."""
        window = self.pacer.window
        if self._new.get(space, 0) < window:
            return None
        return (f"device {self.device} ignored flow control: it sent another batch in space "
                f"{space!r} while {window} batches of new envelopes were unacknowledged (the "
                f"window is {window}); wait for an ACK before sending more")

    def stored(self, space: str, applied: int) -> None:
        """The frame was stored, ``applied`` of its envelopes new: its ACK is now owed."""
        new = applied > 0
        self._unanswered.append((space, new))
        if new:
            self._new[space] = self._new.get(space, 0) + 1

    def overdrawn(self) -> float:
        """Seconds until the device's debt is back under :data:`MAX_DEBT_SECONDS` (0: read on)."""
        if self._budget is None or self.pacer.released:
            return 0.0
        return max(0.0, self._budget.debt(self.pacer.clock()) - MAX_DEBT_SECONDS)

    # -- the driver ---------------------------------------------------------------------
    def hold(self, commit: asyncio.Future[None] | None) -> asyncio.Future[None] | None:
        """``Hooks.durable`` of a paced connection: the store's commit future (``commit``),
        or, while the device is in debt, a future done once that commit is done and the
        debt run up so far is paid off."""
        if self._release_at is None:
            return commit
        now = self.pacer.clock()
        if now >= self._release_at or self.pacer.released:
            self._release_at = None
            self._hold = None
            return commit
        hold = self._hold
        if hold is None or hold.commit is not commit or hold.future.done():
            delay = self._release_at - now
            hold = self._hold = _Hold(delay, commit, self._holds.discard)
            self._holds.add(hold)
            if self.pacer.on_hold is not None:
                self.pacer.on_hold(delay)
        return hold.future

    def answered(self, frames: list[bytes]) -> None:
        """Frames entered the outbox: each ACK of a batch answers the oldest unanswered one."""
        if not self._unanswered:
            return
        for frame in frames:
            if len(frame) > 1 and frame[1] == MessageType.ACK and ack_batch(frame) != 0:
                if not self._unanswered:
                    return
                space, new = self._unanswered.popleft()
                if new:
                    self._new[space] -= 1

    def release(self) -> None:
        self._release_at = None
        self._hold = None
        for hold in list(self._holds):
            hold.expire()

    def close(self) -> None:
        """The connection ended: stop its timers and let go of its device's budget."""
        if self.closed:
            return
        self.closed = True
        for hold in list(self._holds):
            hold.cancel()
        self._holds.clear()
        self.pacer.detach(self, self._budget)


def ack_batch(frame: bytes) -> int | None:
    """The batch number of an ACK frame this relay encoded (``[5, space, batch, vv]`` in
    canonical CBOR: the array head, the type, then two unsigned integers); None if it is
    not laid out so."""
    pos = 2
    value = None
    for _ in range(2):  # space, then batch
        if pos >= len(frame):
            return None
        head = frame[pos]
        if head >> 5 != 0:  # not an unsigned integer
            return None
        info = head & 0x1F
        if info < 24:
            value, pos = info, pos + 1
            continue
        if info > 27:
            return None
        width = 1 << (info - 24)
        if pos + 1 + width > len(frame):
            return None
        value = int.from_bytes(frame[pos + 1:pos + 1 + width], "big")
        pos += 1 + width
    return value


__all__ = ["BURST_SECONDS", "MAX_DEBT_SECONDS", "Flow", "Pacer", "TokenBucket", "ack_batch"]
