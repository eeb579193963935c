"""Prometheus metrics of one relay (its own registry, so tests can run several relays)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from crdt_sync.protocol.messages import E_GOING_AWAY, E_NORMAL, ERROR_NAMES

#: every reason the relay counts, listed at 0 from the start (a reason that appears only
#: after its first occurrence cannot be alerted on with rate() or absent())
REJECTION_REASONS = ("connection-limit", "address-limit", "handshake-evicted", "flow-control", "not-allowed",
                     "slow-consumer", "quarantined", "membership", "clock-skew",
                     *(name for code, name in ERROR_NAMES.items() if code not in (E_NORMAL, E_GOING_AWAY)))

#: crdt_relay_client_addresses_total's sources: an address from a PROXY header; a connection
#: closed for its PROXY header; an address from the forwarded header; a trusted proxy's header
#: refused (the connection went on under the address before it); a header from a peer that
#: is not trusted, not read
CLIENT_ADDRESS_SOURCES = ("proxy-protocol", "proxy-refused", "header", "header-malformed", "header-ignored")


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("crdt_relay_connections_open", "Open device connections", registry=r)
        self.unauthenticated = Gauge("crdt_relay_connections_unauthenticated",
                                     "Open connections whose handshake has not completed", registry=r)
        self.connections_total = Counter("crdt_relay_connections_accepted", "Connections accepted",
                                         registry=r)
        self.envelopes_in = Counter("crdt_relay_envelopes_in_total", "Envelopes stored", registry=r)
        self.envelopes_out = Counter("crdt_relay_envelopes_out_total", "Envelopes sent", registry=r)
        self.bytes_in = Counter("crdt_relay_bytes_in_total", "Frame bytes received", registry=r)
        self.bytes_out = Counter("crdt_relay_bytes_out_total", "Frame bytes sent", registry=r)
        self.rejections = Counter("crdt_relay_rejections_total", "Refused input, by reason",
                                  ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        #: where client addresses came from behind trusted proxies (docs/RELAY.md, "Behind a proxy")
        self.client_addresses = Counter(
            "crdt_relay_client_addresses_total",
            "Client addresses read from trusted proxies, and headers refused or ignored", ["source"],
            registry=r)
        for source in CLIENT_ADDRESS_SOURCES:
            self.client_addresses.labels(source)
        self.store_bytes = Gauge("crdt_relay_store_bytes", "Size of the SQLite store", registry=r)
        self.commits = Counter("crdt_relay_commits_total", "Group commits (fsync)", registry=r)
        self.fanout = Histogram("crdt_relay_fanout_seconds",
                                "From envelopes accepted to their leaving for a subscriber",
                                buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                registry=r)

        self.paced = Histogram("crdt_relay_paced_seconds",
                               "How long ACKs were held back to pace a device over its rate",
                               buckets=(.01, .05, .1, .25, .5, 1, 2, 4, 8, 16, 32), registry=r)
        self.read_stalls = Counter("crdt_relay_read_stalls_total",
                                   "Waits before reading a device deeper in debt than 10 s of its rate",
                                   registry=r)

        # Several nodes (relay/bus.py) and the Postgres pool.
        self.bus_up = Gauge("crdt_relay_bus_up", "1 while the Redis bus answers (0: down or off)",
                            registry=r)
        self.bus_errors = Counter("crdt_relay_bus_errors_total", "Failed Redis calls", registry=r)
        self.bus_notices = Counter("crdt_relay_bus_notices_total",
                                   "Bus notices: published, received (from other nodes), dropped",
                                   ["direction"], registry=r)
        for direction in ("published", "received", "dropped"):
            self.bus_notices.labels(direction)
        self.bus_lag = Histogram("crdt_relay_bus_lag_seconds",
                                 "From another node's commit notice to its reading here",
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=r)
        self.bus_caught_up = Counter("crdt_relay_bus_caught_up_total",
                                     "Envelopes of other nodes read from Postgres into the tail",
                                     registry=r)
        self.pool = Gauge("crdt_relay_pg_pool", "The Postgres connection pools' counters (psycopg_pool)",
                          ["connection", "stat"], registry=r)

        #: frame bytes in and out not yet added to the counters: a plain addition per frame
        #: instead of a locked counter update; added when the metrics are read
        self.pending_bytes = [0, 0]

    def render(self) -> bytes:
        pending, self.pending_bytes = self.pending_bytes, [0, 0]
        self.bytes_in.inc(pending[0])
        self.bytes_out.inc(pending[1])
        return generate_latest(self.registry)
