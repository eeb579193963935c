"""The Redis fixture: a real server that answers, can be killed and restarted on its port."""

from __future__ import annotations

import redis

from tests.redis_server import RedisServer, _ping


def test_redis_server_answers_and_restarts(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping()
        client.xadd("crdt:{s}:log", {"k": "v"})
        assert client.xlen("crdt:{s}:log") == 1
        redis_server.kill()
        assert not _ping(redis_server.port)
        redis_server.restart()
        assert client.ping()
        assert client.xlen("crdt:{s}:log") == 0  # no persistence: a restart starts empty
    finally:
        client.close()
