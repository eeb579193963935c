"""Fixtures of the relay cluster tests: a real Postgres server for the session (from
``tests/relay_backend/conftest.py``: ``pg_server``, ``pg_url``) and a real Redis server per
test (:mod:`tests.redis_server`), so a test may kill and restart it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.external_servers import start_or_skip
from tests.redis_server import RedisServer, RedisUnavailable, find_redis, start_redis
from tests.relay_backend.conftest import pg_server, pg_url

__all__ = ["pg_server", "pg_url", "redis_server"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of this test's own, stopped after it. Without the binary this skips,
    except under CI (CI=true), where it fails."""
    server = start_or_skip(start_redis, installed=find_redis() is not None,
                           missing="no redis-server binary (apt-get install redis-server)",
                           unavailable=RedisUnavailable)
    yield server
    server.stop()
