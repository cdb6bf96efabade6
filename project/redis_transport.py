"""kombu's Redis transport, with one fix: a Redis restart must not kill the worker.

When the worker loses its broker connection, Celery 5.7 first `collect()`s the broken
connection, which drops the transport's `client`, then closes it. Closing the channel
restores the messages it had delivered and not yet acknowledged (always some with
`acks_late`, prefetch and countdowns), and a task that finishes later acknowledges its
message on that same channel. Both need a new Redis client, which kombu 5.7 builds from
`transport.client`, now None: an AttributeError, not a connection error, so Celery calls
it unrecoverable and the worker exits. Every Redis restart, failover or network blip
stopped every worker for good (found by `manage.py chaos`).

Here that channel raises the connection error it really is: the close is ignored, the
acknowledgement is logged as failed, and the worker reconnects. Nothing is lost by it:
those messages died with the connection (and with Redis, when it restarted without
persistence); the sweeper sends again what they carried, with the same keys.

Upstream: the same AttributeError from the same line of `Channel._connparams`
(`'NoneType' object has no attribute 'hostname'`: a channel closed after its transport's
`client` was dropped) was reported as https://github.com/celery/kombu/issues/582 ("Error on
restarting Gossip", kombu 3.0.35, closed). The Celery code that now reaches it on every
lost connection, `Consumer.on_connection_error_after_connected` (collect, then close), was
reworked for https://github.com/celery/celery/issues/9705 ("Failing to re-establish
connection to redis") in https://github.com/celery/celery/pull/10242 and
https://github.com/celery/celery/pull/10570. No upstream report of this exact failure in
kombu/Celery 5.7 was found as of 2026-11-30: re-check on every kombu or Celery upgrade.

When to remove it: the system check `dualsend.E005` (dualsend_app/checks.py) fails while
the installed kombu is not CHECKED_AGAINST_KOMBU. On an upgrade, read kombu's
`Channel._connparams` and Celery's `on_connection_error_after_connected`, then run
`pytest tests/test_broker_transport.py` (a Redis restart under a worker holding a
countdown) with CELERY_BROKER_TRANSPORT removed from project/settings.py, so the worker
runs kombu's own transport: if it passes, delete this module and that setting; if it
fails, put the setting back, check that it passes again with the fix, and update
CHECKED_AGAINST_KOMBU. `manage.py chaos --redis-restarts 3` is the longer proof.
"""

from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

# The kombu release this fix was written and checked against (the pin in pyproject.toml).
CHECKED_AGAINST_KOMBU = "5.7.0"


class Channel(kombu_redis.Channel):
    _shared_client: redis.Redis | None = None

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)

    def _create_client(self, asynchronous: bool = False) -> redis.Redis:
        """One client per pool for the synchronous commands, not one per command.

        kombu builds a new `redis.Redis` for every publish, acknowledgement and event
        (`conn_or_acquire`), and redis-py 7 fills two dicts of some 160 response
        callbacks in each: about 90 us of CPU, several times per task. A client that
        does not hold a connection of its own (the default) takes one from its pool per
        command, so one client serves every thread. A new pool (after a fork, or a lost
        connection) gets a new client."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool
        client = self._shared_client
        if client is None or client.connection_pool is not pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
