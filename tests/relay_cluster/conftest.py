"""Fixtures of the relay cluster tests: a real Postgres server for the session (from
``tests/relay_backend/conftest.py``: ``pg_server``, ``pg_url``) and a real Redis server per
test (:mod:`tests.redis_server`), so a test may kill and restart it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer, RedisUnavailable, find_redis, start_redis
from tests.relay_backend.conftest import pg_server, pg_url

__all__ = ["pg_server", "pg_url", "redis_server"]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis server of this test's own, stopped after it. Without the binary this skips,
    except under CI (CI=true), where it fails."""
    if find_redis() is None and not os.environ.get("CI"):
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    try:
        server = start_redis()
    except RedisUnavailable as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()
