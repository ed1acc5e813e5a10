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

import json
import logging
import threading
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import connection
from django.dispatch import receiver
from django.utils import timezone

from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    PipelineExecution,
    progress_percentage,
)
from executions.signals import execution_status_changed, step_status_changed

logger = logging.getLogger(__name__)

EVENT_MESSAGE_TYPE = "progress.event"  # the consumer's handler: progress_event()

# One round trip per event: number it, keep the run's finished-step count from ever going back,
# append the event to the run's history, trim and expire the history, and publish it to the
# run's channel-layer group, atomically (a watcher can never get an event that the history does
# not have, nor miss one the history has, except by disconnecting).
# KEYS: seq counter, history list, the group's pub/sub channel, the finished-step high-water mark;
# ARGV: event JSON object without seq, completed_steps and percentage (non-empty), history length,
# ttl seconds, "1" if final, the finished steps the change saw, the run's total steps.
# The counts the change saw can be older than what another process has published already (two
# branches finishing at once both count from before the other): the high-water mark keeps the
# published count from going back. The numbers go in front of the object's first key, so the
# JSON written by Python is kept as is (floats stay floats). The published message is the channel
# layer's own (JSON serializer, see CHANNEL_LAYERS):
# {"type": "progress.event", "seq": n, "final": bool, "text": <the event's JSON>}.
_PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
local ttl = tonumber(ARGV[3])
local done = tonumber(ARGV[5])
local seen = tonumber(redis.call('GET', KEYS[4]) or '0')
if seen > done then done = seen end
redis.call('SET', KEYS[4], done, 'EX', ttl)
local total = tonumber(ARGV[6])
local percentage = '100.0'
if total > 0 then percentage = string.format('%.1f', math.floor(1000.0 * done / total + 0.5) / 10) end
local text = '{"seq": ' .. seq .. ', "completed_steps": ' .. done .. ', "percentage": ' .. percentage .. ', '
             .. string.sub(ARGV[1], 2)
redis.call('RPUSH', KEYS[2], text)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', KEYS[3], cjson.encode({type = '""" + EVENT_MESSAGE_TYPE + """', seq = seq,
                                              final = (ARGV[4] == '1'), text = text}))
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


def finished_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:finished"


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
        "percentage": progress_percentage(finished, total),
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
    # Events after this snapshot never report fewer finished steps than it does.
    redis_client().eval(_RAISE_FINISHED_SCRIPT, 1, finished_key(execution_id), finished,
                        settings.PROGRESS_EVENT_TTL_SECONDS)
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
        "percentage": progress_percentage(finished, total),
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


_RAISE_FINISHED_SCRIPT = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
"""


def group_channel(execution_id: UUID | str) -> str:
    """The Redis pub/sub channel of a run's group, as channels_redis's pub/sub layer names it
    (`<prefix>__group__<group>`; tests check it against the layer)."""
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "asgi")
    return f"{prefix}__group__{group_name(execution_id)}"


_scripts: dict[int, Any] = {}


def publish(event: dict[str, Any], *, channel: str | None = None) -> dict[str, Any]:
    """Numbers the event, appends it to the run's history and sends it to the run's group, in one
    Redis round trip from the caller (the engine publishes in commit order, before it enqueues
    the steps a change made ready, so a watcher never sees a child start before its parent
    finished, whichever process runs the child). `channel`: another pub/sub channel than the
    run's group (tests)."""
    client = redis_client()
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(_PUBLISH_SCRIPT)
    execution_id = event["execution_id"]
    rest = {key: value for key, value in event.items() if key not in {"completed_steps", "percentage"}}
    text = script(
        keys=[seq_key(execution_id), history_key(execution_id), channel or group_channel(execution_id),
              finished_key(execution_id)],
        args=[json.dumps(rest), settings.PROGRESS_EVENT_HISTORY, settings.PROGRESS_EVENT_TTL_SECONDS,
              "1" if event.get("final") else "0", int(event["completed_steps"]), int(event["total_steps"])],
    )
    return json.loads(text)


def _counts(execution_id, progress: dict[str, Any] | None) -> dict[str, Any]:
    if progress is None:
        return _progress(execution_id)
    finished, total = progress["completed_steps"], progress["total_steps"]
    return {"execution_status": progress["execution_status"], "completed_steps": finished, "total_steps": total,
            "percentage": progress_percentage(finished, total)}


def execution_event(*, execution_id, status: str, previous_status: str,
                    progress: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "execution",
        "execution_id": str(execution_id),
        "node_id": None,
        "step_id": None,
        "status": status,
        "previous_status": previous_status,
        **_counts(execution_id, progress),
        "execution_status": status,
        "timestamp": timezone.now().isoformat(),
        "final": status in FINISHED_EXECUTION_STATUSES,
    }


def step_event(*, execution_id, step_id, node_id: str, status: str, previous_status: str,
               progress: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "step",
        "execution_id": str(execution_id),
        "node_id": node_id,
        "step_id": str(step_id),
        "status": status,
        "previous_status": previous_status,
        **_counts(execution_id, progress),
        "timestamp": timezone.now().isoformat(),
        "final": False,
    }


# The engine sends these signals from transaction.on_commit. A failure to publish is logged and
# never breaks the engine: the database stays the truth and clients resync from a snapshot.

@receiver(execution_status_changed, dispatch_uid="executions.events.on_execution_status_changed")
def on_execution_status_changed(sender, *, execution_id, status, previous_status, progress=None, **kwargs) -> None:
    try:
        event = publish(execution_event(execution_id=execution_id, status=status, previous_status=previous_status,
                                        progress=progress))
    except Exception:
        logger.exception("could not publish the progress event of execution %s", execution_id)
        return
    if event["final"]:
        # The run's last lines become searchable now rather than at the next periodic run.
        try:
            from executions.logstore.tasks import ship_soon

            ship_soon()
        except Exception:
            logger.warning("could not enqueue log shipping after execution %s ended", execution_id, exc_info=True)


@receiver(step_status_changed, dispatch_uid="executions.events.on_step_status_changed")
def on_step_status_changed(sender, *, execution_id, step_id, node_id, status, previous_status, progress=None,
                           **kwargs) -> None:
    try:
        publish(step_event(execution_id=execution_id, step_id=step_id, node_id=node_id, status=status,
                           previous_status=previous_status, progress=progress))
    except Exception:
        logger.exception("could not publish the progress event of step %s", step_id)
