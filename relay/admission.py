"""The relay's connection budgets: connections still in their handshake (unauthenticated)
and authenticated ones, kept apart, and a per-address share of the first, so that strangers
who open connections and never authenticate cannot lock members out.

- A connection starts unauthenticated. While fewer than ``unauthenticated`` are open, it
  is let in.
- When that many are open, the newcomer's address must hold fewer than ``per_address``
  of them (its share), else it is refused before the WebSocket opens; a newcomer within
  its share makes room by evicting the oldest connection of the address holding the most.
  So idle strangers lose their place to whoever comes next, an address that opened many
  loses first, and no address can take the places of others beyond its share. (A burst of
  honest devices behind one address is not refused while the budget has room.)
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
        """A new connection from ``address``: (refusal, None) when the budget is full and its
        address has its share already, else (None, the connection evicted to make room, if
        one was)."""
        evicted = None
        if len(self._address) >= self.max_unauthenticated:
            mine = self._pending.get(address)
            if mine is not None and len(mine) >= self.max_per_address:
                return (f"too many connections from {address} that have not authenticated yet "
                        f"(at most {self.max_per_address} while the relay is this busy); "
                        f"retry later"), None
            evicted = self._evict()
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
