"""Celery's Redis result backend, without the subscriptions nobody reads.

Publishing a chord made the publishing process SUBSCRIBE to the result channel of each
header task, twice over, and keep a result object for each:
- `RedisBackend.apply_chord` builds a `GroupResult` of the header only to see whether a
  task of it is itself a group; building it sets up a ready-barrier, which asks the
  backend for every task's result (`AsyncResult.then`, held strongly);
- `group._apply_tasks` hangs the group's own barrier on each result (`then(weak=True)`).

Nothing in dualsend waits on either, and our send tasks store no result
(`ignore_result`), so no message ever arrives to end the subscription: every process that
dispatches orders (the web, the sweeper's worker) kept two Redis channels and two result
objects per order for its whole life, and paid a round trip for each. Upstream reports
of the same leak: https://github.com/celery/celery/issues/3812 (chords, closed without a
fix), https://github.com/celery/celery/issues/4824 and
https://github.com/celery/celery/issues/5320 (open as of 2026-12-01).

Here the nested-group check looks at the results without building the `GroupResult`
(upstream's `apply_chord` for a header that holds a group), and a weak pending result
(only a group's barrier asks for one) is not subscribed to. A real wait,
`AsyncResult.get()`, subscribes as before. `CELERY_RESULT_BACKEND` names this class in front
of the Redis URL (`module:Class+redis://...`, Celery's `backends.by_url`).
"""

from typing import Any

from celery.backends import redis as celery_redis
from celery.result import GroupResult
from celery.utils.functional import _regen


class RedisBackend(celery_redis.RedisBackend):
    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        results = header_result_args[1]
        # Upstream's condition, checked on the results themselves: only a header holding
        # a group stores anything.
        if not isinstance(results, _regen) and any(
            isinstance(result, GroupResult) for result in results
        ):
            super().apply_chord(header_result_args, body, **kwargs)

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        if weak:
            return result
        return super().add_pending_result(result, weak=weak, start_drainer=start_drainer)
