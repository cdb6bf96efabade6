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
"""

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise RedisConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
