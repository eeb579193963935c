"""The bus settings: ``--bus``, ``CRDT_SYNC_RELAY_BUS`` or ``bus =`` in ``[relay]`` (as
``store``), with ``node`` and ``bus_recheck``; a bus needs a Postgres store; the stream keys
carry a Redis Cluster hash tag per space."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdt_sync.relay.bus import stream_key
from crdt_sync.relay.config import ConfigError, load_config

PG = "postgresql://relay@db/relay"


def test_the_bus_setting_from_env_toml_and_options(tmp_path: Path) -> None:
    toml = tmp_path / "relay.toml"
    toml.write_text(f'[relay]\nstore = "{PG}"\nbus = "redis://toml:6379/0"\nnode = "a"\nbus_recheck = 2.5\n')
    assert load_config({}, environ={}).bus is None
    from_toml = load_config({}, environ={}, config_file=toml)
    assert (from_toml.bus, from_toml.node, from_toml.bus_recheck) == ("redis://toml:6379/0", "a", 2.5)
    env = {"CRDT_SYNC_RELAY_BUS": "redis://env:6379/0", "CRDT_SYNC_RELAY_BUS_RECHECK": "1"}
    from_env = load_config({}, environ=env, config_file=toml)
    assert (from_env.bus, from_env.bus_recheck) == ("redis://env:6379/0", 1.0)
    assert load_config({"bus": "rediss://cli:6380"}, environ=env, config_file=toml).bus == "rediss://cli:6380"
    assert load_config({"store": PG}, environ={"CRDT_SYNC_RELAY_BUS": ""}).bus is None


def test_a_bus_needs_a_redis_url_and_a_postgres_store() -> None:
    with pytest.raises(ConfigError, match="is not a redis:// URL"):
        load_config({"bus": "nats://x", "store": PG}, environ={})
    with pytest.raises(ConfigError, match="set store to a postgresql:// URL too"):
        load_config({"bus": "redis://x"}, environ={})
    with pytest.raises(ConfigError, match="bus_recheck"):
        load_config({"bus_recheck": "0"}, environ={})


def test_stream_keys_have_a_hash_tag_per_space() -> None:
    assert stream_key("s4kqus") == "crdt:{s4kqus}:log"
