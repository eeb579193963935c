"""Relay settings: command-line options over environment variables over a TOML file over
defaults, and the device allow-list (a file the operator edits; reloaded on SIGHUP)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from crdt_sync.clocks import check_skew
from crdt_sync.errors import CrdtSyncError
from crdt_sync.hlc import DEFAULT_MAX_SKEW_MS
from crdt_sync.identity import device_id, public_key_of

from .client_address import HEADERS, parse_networks, split_list

ENV_PREFIX = "CRDT_SYNC_RELAY_"
#: What a ``store`` setting starts with to name a Postgres database.
STORE_URL_SCHEMES = ("postgresql://", "postgres://")
#: What a ``bus`` setting starts with (a Redis server).
BUS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(CrdtSyncError, ValueError):
    """A setting has a value the relay cannot use."""


@dataclass(frozen=True)
class RelayConfig:
    """Every setting, with its default. Each may come from ``--NAME``, ``CRDT_SYNC_RELAY_NAME``
    or the ``[relay]`` table of the TOML file given by ``--config`` / ``CRDT_SYNC_RELAY_CONFIG``."""

    data: Path | None = None  # None: the crdt-sync data directory ($CRDT_SYNC_DATA, else the user's)
    #: where envelopes are stored: None, SQLite in the data directory; a postgresql:// URL, that
    #: Postgres database (docs/RELAY.md, "Running on Postgres")
    store: str | None = None
    #: several relay nodes on one Postgres store: a redis:// URL, fan-out between them over
    #: Redis Streams (docs/RELAY.md, "Several nodes"); None: no bus (other nodes' commits are
    #: still read, every bus_recheck seconds)
    bus: str | None = None
    #: this node's name on the bus (its consumer group); None: HOSTNAME-PORT
    node: str | None = None
    #: seconds between two re-checks of each open space against the store (a lost notice
    #: costs at most this much delay)
    bus_recheck: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8787
    allow_list: Path | None = None  # None: any device that proves its key may sync
    cert: Path | None = None  # with key: serve wss://
    key: Path | None = None
    max_connections: int = 10_000  # authenticated connections (members)
    #: connections whose handshake has not completed (strangers until they prove an allowed
    #: key): with this many open, a newcomer evicts the oldest of the address holding the most
    max_unauthenticated: int = 64
    #: with max_unauthenticated open, a newcomer whose address holds this many is refused (HTTP 429)
    max_unauthenticated_per_address: int = 8
    handshake_timeout: float = 5.0  # an unauthenticated connection has this long to authenticate
    rate_envelopes: float = 500.0  # per device, per second (a burst of 10 s is allowed)
    rate_bytes: float = 8 * 1024 * 1024  # per device, per second
    send_timeout: float = 30.0  # a client that does not read for this long is dropped
    log_format: str = "text"  # or "json": one JSON object per line
    log_level: str = "info"
    #: seconds a device's clock may be ahead of the relay's: envelopes stamped further ahead
    #: are held back (not stored, the device is told: CLOCK_SKEW) until the relay catches up
    max_clock_skew: float = DEFAULT_MAX_SKEW_MS / 1000
    #: enforce space membership (docs/RELAY.md, "Membership"): store only what members may
    #: write, serve a space only to its readers, refuse plaintext. On by default (devices seal
    #: encrypted, member-signed spaces); an operator may turn it off
    membership: bool = True
    #: IP addresses and CIDR networks of the load balancers or reverse proxies in front of
    #: the relay: a connection from one counts under the client address it forwards (its
    #: PROXY protocol header, else forwarded_header) instead of its own (docs/RELAY.md,
    #: "Behind a proxy"). Kept in canonical form (``10.0.0.7/32``); empty: no one is trusted
    trusted_proxies: tuple[str, ...] = ()
    #: the HTTP header a trusted proxy forwards the client address in: x-forwarded-for,
    #: forwarded (RFC 7239) or none (only the PROXY protocol is read)
    forwarded_header: str = "x-forwarded-for"


def _convert(name: str, kind: Any, raw: Any) -> Any:
    if "tuple" in str(kind):  # a list of networks (trusted_proxies): a string, or a TOML list
        entries = split_list(raw) if isinstance(raw, str) else raw
        if not isinstance(entries, list | tuple) or not all(isinstance(e, str) for e in entries):
            raise ConfigError(f"relay setting {name} = {raw!r} is not a list of addresses")
        try:
            return tuple(str(network) for network in parse_networks(entries))
        except ValueError as exc:
            raise ConfigError(f"relay setting {name}: {exc}") from None
    text = str(raw)
    if kind in (bool, "bool"):
        if isinstance(raw, bool):
            return raw
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"relay setting {name} = {raw!r} is not true or false")
    try:
        if kind in (int, "int"):
            return int(text)
        if kind in (float, "float"):
            return float(text)
        if "Path" in str(kind):
            return Path(text) if text else None
    except ValueError:
        raise ConfigError(f"relay setting {name} = {raw!r} is not a valid {kind}") from None
    return text


def load_config(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                config_file: Path | None = None) -> RelayConfig:
    """Settings from a TOML file, then the environment, then explicit ``overrides`` (CLI)."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    from_env = environ.get(ENV_PREFIX + "CONFIG")
    path = config_file or (Path(from_env) if from_env else None)
    if path is not None:
        try:
            table = tomllib.loads(path.read_text()).get("relay", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read relay config {path}: {exc}") from None
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: relay must be a table ([relay]), not {table!r}")
        values.update({k.replace("-", "_"): v for k, v in table.items()})
    names = {f.name: f.type for f in fields(RelayConfig)}
    for name in names:
        if ENV_PREFIX + name.upper() in environ:
            values[name] = environ[ENV_PREFIX + name.upper()]
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(names)
    if unknown:
        raise ConfigError(f"unknown relay settings: {', '.join(sorted(unknown))}")
    config = replace(RelayConfig(), **{k: _convert(k, names[k], v) for k, v in values.items()})
    if config.log_format not in ("text", "json"):
        raise ConfigError("log_format is text or json")
    if config.forwarded_header.lower() not in HEADERS:
        raise ConfigError(f"forwarded_header = {config.forwarded_header!r} is one of {', '.join(HEADERS)}")
    config = replace(config, forwarded_header=config.forwarded_header.lower())
    if config.store == "":
        config = replace(config, store=None)
    if config.store is not None and not config.store.startswith(STORE_URL_SCHEMES):
        raise ConfigError(f"store = {config.store!r} is not a postgresql:// URL (leave it unset to "
                          f"store in SQLite in the data directory)")
    if config.bus == "":
        config = replace(config, bus=None)
    if config.bus is not None:
        if not config.bus.startswith(BUS_URL_SCHEMES):
            raise ConfigError(f"bus = {config.bus!r} is not a redis:// URL (rediss://, unix:// also do)")
        if config.store is None:
            raise ConfigError("a bus joins relay nodes that share one store: set store to a "
                              "postgresql:// URL too")
    if (config.cert is None) != (config.key is None):
        raise ConfigError("wss needs both cert and key")
    _check_ranges(config)
    return config


def _check_ranges(config: RelayConfig) -> None:
    # Caught here, with the setting's name, rather than as a traceback at bind time or as a
    # relay that refuses or drops every device.
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port = {config.port} is not 0..65535 (0 picks a free port)")
    for name in ("max_connections", "max_unauthenticated", "max_unauthenticated_per_address"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} = {getattr(config, name)} allows no device; use 1 or more")
    for name in ("rate_envelopes", "rate_bytes", "send_timeout", "handshake_timeout", "bus_recheck"):
        value = getattr(config, name)
        if not value > 0:  # also refuses NaN
            raise ConfigError(f"{name} = {value!r} must be a positive number")
    try:
        check_skew(config.max_clock_skew)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"log_level = {config.log_level!r} is debug, info, warning, error or critical")


class AllowList:
    """Device ids allowed to sync, one per line as ``crdt-sync init`` prints them (``#``
    starts a comment). No file means open access."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.devices: frozenset[str] | None = None
        self.reload()

    def reload(self) -> int:
        """Read the file again; returns how many devices it allows. Raises ConfigError."""
        if self.path is None:
            return 0
        try:
            lines = self.path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read allow-list {self.path}: {exc.strerror}") from None
        devices = set()
        for number, line in enumerate(lines, 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            try:
                key = public_key_of(entry)
            except CrdtSyncError:
                raise ConfigError(f"{self.path}:{number}: {entry!r} is not a device id") from None
            devices.add(device_id(key))  # the canonical (lowercase) form sessions compare with
        self.devices = frozenset(devices)
        return len(devices)

    def refusal(self, device: str) -> str | None:
        if self.devices is None or device in self.devices:
            return None
        return f"device {device} is not on this relay's allow-list"
