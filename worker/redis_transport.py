"""kombu's Redis transport with one guard, so losing Redis never kills a worker.

With kombu 5.7 and redis-py 8, when Redis goes away Celery's consumer closes its connection; the
Redis channel's close then tries to put unacknowledged messages back using a *new* client built
from `self.connection.client`, which is already None. The AttributeError escapes kombu's
`ignore_errors` (it ignores connection errors only) and the worker dies with "Unrecoverable
error" (seen in tests/worker/test_reliability.py::test_a_redis_restart_mid_job_loses_nothing).
Raising a connection error instead lets Celery reconnect as designed. The messages stay in Redis's
unacked set until the visibility timeout restores them; if Redis lost them, the watchdog re-sends.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = "worker.redis_transport:Transport"
