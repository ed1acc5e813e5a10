"""Which Celery queues have a live worker, so that a step routed to a queue nobody consumes (a GPU
step and no GPU worker) is reported instead of waiting silently forever.

Every worker (`celery -A imageflow worker`, its main process) writes the queues it consumes to the
broker's Redis when it is ready and again every WORKER_PRESENCE_SECONDS, in one sorted set per
deployment (`<CELERY_TASK_DEFAULT_QUEUE>:workers`: member "<worker name> <queue>,<queue>", score
the time it was last written), and removes itself on a warm shutdown. A worker not heard from for
three intervals (killed, its host gone) counts as gone. Reading the live queues is one
ZRANGEBYSCORE: cheap enough for every status poll of a run that still has steps to do.

Celery's own `inspect().active_queues()` would answer too, but it broadcasts to every worker and
waits for the slowest (a second or more): not for a status poll.

When no worker of the deployment has written its queues at all (workers of an older version, a
test's in-process worker, Redis unreachable) the answer is "unknown" (None), and nothing is
reported: a report says a queue has no worker only when others are known to be there.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger("imageflow.executions")

_GONE_AFTER_INTERVALS = 3


def presence_key() -> str:
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:workers"


_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def _client():
    """One client (a connection pool) per broker URL and process: a status poll reads through it."""
    import redis

    url = settings.CELERY_BROKER_URL
    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        return _clients[url]


def _member(worker: str, queues) -> str:
    return f"{worker} {','.join(sorted(queues))}"


def worker_announce(*, worker: str, queues, client=None) -> None:
    """Write that `worker` consumes `queues` now (and drop members silent for a long time)."""
    client = client or _client()
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(presence_key(), {_member(worker, queues): now})
        pipe.zremrangebyscore(presence_key(), "-inf", now - 100 * settings.WORKER_PRESENCE_SECONDS)
        pipe.expire(presence_key(), int(100 * settings.WORKER_PRESENCE_SECONDS) + 60)
        pipe.execute()


def worker_withdraw(*, worker: str, queues, client=None) -> None:
    (client or _client()).zrem(presence_key(), _member(worker, queues))


def live_queues() -> dict[str, int] | None:
    """{queue: live workers consuming it}; None when unknown (no worker announces, or Redis is
    unreachable)."""
    import redis

    cutoff = time.time() - _GONE_AFTER_INTERVALS * settings.WORKER_PRESENCE_SECONDS
    try:
        members = _client().zrangebyscore(presence_key(), cutoff, "+inf")
    except redis.RedisError:
        return None
    if not members:
        return None
    counts: dict[str, int] = {}
    for member in members:
        _, _, queues = member.decode().rpartition(" ")
        for queue in filter(None, queues.split(",")):
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def step_queue(step) -> str:
    """The queue a step's (and its items') tasks are sent to."""
    return (step.input_data or {}).get("queue") or settings.CELERY_TASK_DEFAULT_QUEUE


def waiting_for(step, live: dict[str, int] | None) -> str | None:
    """What an unfinished step waits for that will not come by itself: no live worker consumes its
    queue. None when it is finished, its queue has a worker, or nothing is known."""
    if live is None or step.status not in {"pending", "running"}:
        return None
    queue = step_queue(step)
    if live.get(queue):
        return None
    return (f"no live worker consumes queue {queue!r}: the step waits until one does "
            f"(start one with `celery -A imageflow worker -Q {queue}`)")


class PresenceThread:
    """A worker's announcements: now, then every WORKER_PRESENCE_SECONDS until it stops. `queues`
    is asked each time, so queues added to a running worker (`celery control add_consumer`) count."""

    def __init__(self, *, worker: str, queues) -> None:
        self.worker, self._queues = worker, queues
        self._stop = threading.Event()
        self._announced: list[str] = []
        self._thread = threading.Thread(target=self._loop, name="imageflow-presence", daemon=True)

    def start(self) -> None:
        self._announce()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        try:
            worker_withdraw(worker=self.worker, queues=self._announced)
        except Exception:  # a worker stopping while Redis is down: it ages out instead
            logger.warning("could not withdraw the worker's queues", exc_info=True)

    def _announce(self) -> None:
        queues = sorted(self._queues())
        try:
            if queues != self._announced and self._announced:
                worker_withdraw(worker=self.worker, queues=self._announced)
            worker_announce(worker=self.worker, queues=queues)
            self._announced = queues
        except Exception:  # Redis briefly away: the next interval writes it again
            logger.warning("could not announce the worker's queues", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.wait(settings.WORKER_PRESENCE_SECONDS):
            self._announce()
