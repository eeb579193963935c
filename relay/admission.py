"""The relay's connection budgets: connections still in their handshake (unauthenticated),
overall and per source address, and authenticated ones, kept apart so that strangers who
open connections and never authenticate cannot lock members out.

- A connection starts unauthenticated. More than ``per_address`` of them from one address
  are refused before the WebSocket opens.
- When ``unauthenticated`` are open already, the oldest one of the address holding the most
  makes room for the newcomer (it is evicted): idle strangers lose their place to whoever
  comes next, and an address that opens many loses first.
- Once its AUTH is verified (and the allow-list admits it) a connection moves to the
  authenticated budget, ``authenticated`` at most; beyond that it is refused.

One instance per relay, used from the event loop only. Connections are any hashable object
(the server's per-connection record), compared by identity.
"""

from __future__ import annotations

from typing import Generic, TypeVar

Ticket = TypeVar("Ticket")


class Admission(Generic[Ticket]):
    """Counts connections against the budgets (see the module)."""

    def __init__(self, unauthenticated: int, per_address: int, authenticated: int) -> None:
        self.max_unauthenticated = unauthenticated
        self.max_per_address = per_address
        self.max_authenticated = authenticated
        #: unauthenticated connections per address, oldest first (no empty lists)
        self._pending: dict[str, list[Ticket]] = {}
        self._address: dict[Ticket, str] = {}
        self._authenticated: set[Ticket] = set()

    @property
    def unauthenticated(self) -> int:
        return len(self._address)

    @property
    def authenticated(self) -> int:
        return len(self._authenticated)

    def addresses(self) -> int:
        """Addresses with an unauthenticated connection (the only per-address state)."""
        return len(self._pending)

    def arrive(self, ticket: Ticket, address: str) -> tuple[str | None, Ticket | None]:
        """A new connection from ``address``: (refusal, None) when its address has its share
        already, else (None, the connection evicted to make room, if one was)."""
        mine = self._pending.get(address)
        if mine is not None and len(mine) >= self.max_per_address:
            return (f"too many connections from {address} that have not authenticated yet "
                    f"(at most {self.max_per_address}); retry later"), None
        evicted = self._evict() if len(self._address) >= self.max_unauthenticated else None
        self._pending.setdefault(address, []).append(ticket)
        self._address[ticket] = address
        return None, evicted

    def _evict(self) -> Ticket | None:
        # The address holding the most (the first of equals), its oldest connection.
        address = max(self._pending, key=lambda a: len(self._pending[a]), default=None)
        if address is None:
            return None
        victim = self._pending[address][0]
        self._drop_pending(victim)
        return victim

    def authenticate(self, ticket: Ticket) -> str | None:
        """The connection proved an allowed key: move it to the authenticated budget, or
        say why not (the budget is full)."""
        if ticket in self._authenticated:
            return None
        if len(self._authenticated) >= self.max_authenticated:
            return "too many connections to this relay; retry later"
        self._drop_pending(ticket)
        self._authenticated.add(ticket)
        return None

    def leave(self, ticket: Ticket) -> None:
        """The connection ended (idempotent)."""
        self._drop_pending(ticket)
        self._authenticated.discard(ticket)

    def _drop_pending(self, ticket: Ticket) -> None:
        address = self._address.pop(ticket, None)
        if address is None:
            return
        mine = self._pending[address]
        mine.remove(ticket)  # short: at most max_per_address
        if not mine:
            del self._pending[address]


__all__ = ["Admission"]
