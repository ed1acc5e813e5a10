"""Progress events of runs: built from the database after a status change was committed,
numbered, kept in a short per-run history in Redis and fanned out through the channel layer.

Event (JSON object), one per committed state change:

    {"type": "step" | "execution" | "snapshot", "seq": 7, "execution_id": "...",
     "execution_status": "running", "node_id": "resize", "step_id": "...", "status": "completed",
     "previous_status": "running", "completed_steps": 2, "total_steps": 4, "percentage": 50.0,
     "timestamp": "2026-11-26T12:00:00.123456+00:00", "final": false}

`seq` is a per-run counter: numbering, appending to the history and trimming it happen in one
Redis script, so the history is always complete and ordered up to any number a client has seen,
and a client (or the WebSocket consumer) that sees a gap can fill it from the history.
`completed_steps` counts steps in a finished status (completed, failed, skipped, cancelled).
`final` is true on the event of the run's end; a snapshot carries the run's steps too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any
from uuid import UUID

import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from django.utils import timezone

from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    PipelineExecution,
)
from executions.signals import execution_status_changed, step_status_changed

logger = logging.getLogger(__name__)

EVENT_MESSAGE_TYPE = "progress.event"  # the consumer's handler: progress_event()

# KEYS: seq counter, history list; ARGV: event JSON object without seq (non-empty), history
# length, ttl seconds. The number goes in front of the object's first key, so the JSON written by
# Python is kept as is (floats stay floats).
_PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local text = '{"seq": ' .. seq .. ', ' .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], text)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return text
"""

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def redis_client() -> redis.Redis:
    url = settings.CHANNEL_LAYER_REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url) or redis.Redis.from_url(url, decode_responses=True)
            _clients[url] = client
    return client


def group_name(execution_id: UUID | str) -> str:
    # Channel-layer group names allow only ASCII letters, digits, hyphens, underscores, periods.
    return f"execution.{execution_id}"


def seq_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:seq"


def history_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:events"


_PROGRESS_SQL = (
    f"SELECT e.status, COUNT(s.id), COUNT(s.id) FILTER (WHERE s.status = ANY(%s)) "
    f"FROM {PipelineExecution._meta.db_table} e "
    f"LEFT JOIN {ComponentExecution._meta.db_table} s ON s.execution_id = e.id "
    f"WHERE e.id = %s GROUP BY e.status"
)


def _progress(execution_id: UUID | str) -> dict[str, Any]:
    """The run's status and step counts, in one query (plain SQL: it runs twice per step, and the
    ORM's compilation of the grouped, filtered count cost more than the query itself)."""
    with connection.cursor() as cursor:
        cursor.execute(_PROGRESS_SQL, [list(FINISHED_STEP_STATUSES), UUID(str(execution_id))])
        row = cursor.fetchone()
    status, total, finished = row if row else (None, 0, 0)
    return {
        "execution_status": status,
        "completed_steps": finished,
        "total_steps": total,
        "percentage": round(100.0 * finished / total, 1) if total else 0.0,
    }


def current_seq(execution_id: UUID | str) -> int:
    value = redis_client().get(seq_key(execution_id))
    return int(value) if value else 0


def history(execution_id: UUID | str, *, after: int = 0) -> list[dict]:
    """The kept events of a run with seq > after, in order."""
    events = [json.loads(text) for text in redis_client().lrange(history_key(execution_id), 0, -1)]
    return [event for event in events if event["seq"] > after]


def snapshot(execution_id: UUID | str) -> dict[str, Any] | None:
    """The run's state as the database has it now, numbered with the last published seq: every
    event up to that seq is reflected in it (the counter is read first, the rows after)."""
    seq = current_seq(execution_id)
    execution = PipelineExecution.objects.filter(id=execution_id).values(
        "id", "status", "pipeline_id", "started_at", "completed_at", "error_message",
    ).first()
    if execution is None:
        return None
    steps = list(
        ComponentExecution.objects.filter(execution_id=execution_id).order_by("created_at", "id").values(
            "id", "node_id", "status", "started_at", "completed_at", "execution_time_ms", "error_message",
        )
    )
    total = len(steps)
    finished = sum(1 for step in steps if step["status"] in FINISHED_STEP_STATUSES)
    return {
        "type": "snapshot",
        "seq": seq,
        "execution_id": str(execution["id"]),
        "pipeline_id": str(execution["pipeline_id"]),
        "execution_status": execution["status"],
        "status": execution["status"],
        "started_at": _iso(execution["started_at"]),
        "completed_at": _iso(execution["completed_at"]),
        "error_message": execution["error_message"],
        "completed_steps": finished,
        "total_steps": total,
        "percentage": round(100.0 * finished / total, 1) if total else 0.0,
        "steps": [
            {"step_id": str(step["id"]), "node_id": step["node_id"], "status": step["status"],
             "started_at": _iso(step["started_at"]), "completed_at": _iso(step["completed_at"]),
             "execution_time_ms": step["execution_time_ms"], "error_message": step["error_message"]}
            for step in steps
        ],
        "timestamp": timezone.now().isoformat(),
        "final": execution["status"] in FINISHED_EXECUTION_STATUSES,
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


class _LayerSender:
    """Sends to the channel layer from synchronous code (workers, services) through one event
    loop kept in a background thread, so the layer's Redis connection stays open between events
    (async_to_sync would start a loop and a connection per event). A forked process (a Celery
    prefork child) starts its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._pid != os.getpid():
            with self._lock:
                if self._loop is None or self._pid != os.getpid():
                    loop = asyncio.new_event_loop()
                    threading.Thread(target=loop.run_forever, name="progress-events", daemon=True).start()
                    self._loop, self._pid = loop, os.getpid()
        return self._loop

    def group_send(self, group: str, message: dict, *, timeout: float = 5.0) -> None:
        layer = get_channel_layer()
        future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self._running_loop())
        future.result(timeout)


_sender = _LayerSender()


def publish(event: dict[str, Any]) -> dict[str, Any]:
    """Numbers the event, appends it to the run's history and sends it to the run's group."""
    execution_id = event["execution_id"]
    text = redis_client().eval(
        _PUBLISH_SCRIPT, 2, seq_key(execution_id), history_key(execution_id),
        json.dumps(event), settings.PROGRESS_EVENT_HISTORY, settings.PROGRESS_EVENT_TTL_SECONDS,
    )
    numbered = json.loads(text)
    # The JSON text travels as is: each watching consumer sends it without encoding it again.
    _sender.group_send(group_name(execution_id), {
        "type": EVENT_MESSAGE_TYPE, "seq": numbered["seq"], "final": bool(numbered.get("final")), "text": text,
    })
    return numbered


def execution_event(*, execution_id, status: str, previous_status: str) -> dict[str, Any]:
    return {
        "type": "execution",
        "execution_id": str(execution_id),
        "node_id": None,
        "step_id": None,
        "status": status,
        "previous_status": previous_status,
        **_progress(execution_id),
        "execution_status": status,
        "timestamp": timezone.now().isoformat(),
        "final": status in FINISHED_EXECUTION_STATUSES,
    }


def step_event(*, execution_id, step_id, node_id: str, status: str, previous_status: str) -> dict[str, Any]:
    return {
        "type": "step",
        "execution_id": str(execution_id),
        "node_id": node_id,
        "step_id": str(step_id),
        "status": status,
        "previous_status": previous_status,
        **_progress(execution_id),
        "timestamp": timezone.now().isoformat(),
        "final": False,
    }


# The engine sends these signals from transaction.on_commit. A failure to publish is logged and
# never breaks the engine: the database stays the truth and clients resync from a snapshot.

@receiver(execution_status_changed, dispatch_uid="executions.events.on_execution_status_changed")
def on_execution_status_changed(sender, *, execution_id, status, previous_status, **kwargs) -> None:
    try:
        event = publish(execution_event(execution_id=execution_id, status=status, previous_status=previous_status))
    except Exception:
        logger.exception("could not publish the progress event of execution %s", execution_id)
        return
    if event["final"]:
        # The run's last lines become searchable now rather than at the next periodic run.
        try:
            from executions.logstore.tasks import ship_logs

            ship_logs.delay()
        except Exception:
            logger.warning("could not enqueue log shipping after execution %s ended", execution_id, exc_info=True)


@receiver(step_status_changed, dispatch_uid="executions.events.on_step_status_changed")
def on_step_status_changed(sender, *, execution_id, step_id, node_id, status, previous_status, **kwargs) -> None:
    try:
        publish(step_event(execution_id=execution_id, step_id=step_id, node_id=node_id, status=status,
                           previous_status=previous_status))
    except Exception:
        logger.exception("could not publish the progress event of step %s", step_id)
