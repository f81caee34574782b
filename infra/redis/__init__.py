"""Redis adapters: RQ task queues, Redis Streams for results, Redis keys for mission state.

Importing this package imports neither redis nor rq: each module does that inside the code
that needs it, so nothing here slows down commands that never touch Redis.

    client = connect(url)                  # retried through restarts; see connection.py
    ping_or_raise(client, url)             # RedisUnavailableError naming the redacted URL
    queue = RqTaskQueue(client, signer, clock, prefix="reaper")
    bus = RedisStreamEventBus(client, prefix="reaper")
    store = RedisMissionStore(client, prefix="reaper")
"""

from infra.redis.bus import RedisStreamEventBus
from infra.redis.connection import RedisUnavailableError, connect, ping_or_raise, redact
from infra.redis.keys import DEFAULT_PREFIX, RedisKeys, job_id_for, queue_name
from infra.redis.queue import JOB_FUNCTION, RqTaskQueue
from infra.redis.store import RedisMissionStore

__all__ = [
    "DEFAULT_PREFIX",
    "JOB_FUNCTION",
    "RedisKeys",
    "RedisMissionStore",
    "RedisStreamEventBus",
    "RedisUnavailableError",
    "RqTaskQueue",
    "connect",
    "job_id_for",
    "ping_or_raise",
    "queue_name",
    "redact",
]
