"""Progress events of runs: built from the database after a status change was committed,
numbered, kept in a short per-run history in Redis and fanned out through the channel layer.

Event (JSON object), one per committed state change:

    {"type": "step" | "execution" | "snapshot", "seq": 7, "execution_id": "...",
     "execution_status": "running", "node_id": "resize", "step_id": "...", "status": "completed",
     "previous_status": "running", "completed_steps": 2, "total_steps": 4, "percentage": 50.0,
     "timestamp": "2026-11-26T12:00:00.123456+00:00", "final": false}

`seq` is a per-run counter: numbering, appending to the history and trimming it happen in one
Redis script, so the history is always complete (but for superseded step_items events, below) and
ordered up to any number a client has seen, and a client (or the WebSocket consumer) that sees a
gap can fill it from the history.
`completed_steps` counts steps in a finished status (completed, failed, skipped, cancelled).
`final` is true on the event of the run's end; a snapshot carries the run's steps too.

A step that runs as items (a map step) also publishes `step_items` events with its item counts,
coalesced per run (executions/item_coalescer.py: at most ITEM_EVENTS_PER_SECOND per run and
publishing process, the last counts always published, and before the step's or run's next
status event from that process):

    {"type": "step_items", "seq": 8, "execution_id": "...", "node_id": "resize", "step_id": "...",
     "items": {"total": 120, "completed": 37, "failed": 2, "skipped": 0, "cached": 10},
     "run_items": {"total": 240, "completed": 37, ...}, "timestamp": "...", "final": false}

The history keeps only the newest step_items event of each step (a newer one takes the older
out), so a big run's item events never push its status events out of it; a missing seq in the
history is such a superseded event. An item event whose counts are no higher than those already
published for the step (another process's older reading) is not published, nor is one after the
run's final event. A step event carries `items` too once the step has published any.
"""

from __future__ import annotations

import atexit
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

from executions.item_coalescer import ItemProgressCoalescer
from executions.item_counts import ITEM_COLUMNS, run_item_counts, step_item_counts
from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    PipelineExecution,
    progress_percentage,
)
from executions.signals import execution_status_changed, step_items_progressed, step_status_changed

logger = logging.getLogger(__name__)

EVENT_MESSAGE_TYPE = "progress.event"  # the consumer's handler: progress_event()

# One round trip per event: number it, keep the run's finished-step count from ever going back,
# append the event to the run's history, trim and expire the history, and publish it to the
# run's channel-layer group, atomically (a watcher can never get an event that the history does
# not have, nor miss one the history has, except by disconnecting).
# KEYS: seq counter, history list, the group's pub/sub channel, the finished-step high-water mark,
# the run's published item counts (hash: step id -> items), the final marker, the trimmed seq;
# ARGV: event JSON object without seq, completed_steps and percentage (non-empty), history length,
# ttl seconds, "1" if final, the finished steps the change saw, the run's total steps, the step id
# ("" for a run's event: a step's event carries the step's last published item counts, if any).
# The counts the change saw can be older than what another process has published already (two
# branches finishing at once both count from before the other): the high-water mark keeps the
# published count from going back. The numbers go in front of the object's first key, so the
# JSON written by Python is kept as is (floats stay floats). The published message is the channel
# layer's own (JSON serializer, see CHANNEL_LAYERS):
# {"type": "progress.event", "seq": n, "final": bool, "text": <the event's JSON>}.
# Appending to a run's history (both scripts): RPUSH, trim to the history's length remembering the
# newest seq trimmed away (the history reaches back to any seq above it: a seq missing in
# between is a superseded step_items event, not a lost one), and expire.
_APPEND_LUA = """
local function append(history, trimmed, text, keep, ttl)
  redis.call('RPUSH', history, text)
  redis.call('SET', trimmed, '0', 'NX', 'EX', ttl)
  local over = redis.call('LLEN', history) - keep
  if over > 0 then
    local last = redis.call('LINDEX', history, over - 1)
    redis.call('LTRIM', history, over, -1)
    redis.call('SET', trimmed, string.match(last, '^{"seq": (%d+)'), 'EX', ttl)
  end
  redis.call('EXPIRE', history, ttl)
  redis.call('EXPIRE', trimmed, ttl)
end
"""

_PUBLISH_SCRIPT = _APPEND_LUA + """
local seq = redis.call('INCR', KEYS[1])
local ttl = tonumber(ARGV[3])
local done = tonumber(ARGV[5])
local seen = tonumber(redis.call('GET', KEYS[4]) or '0')
if seen > done then done = seen end
redis.call('SET', KEYS[4], done, 'EX', ttl)
local total = tonumber(ARGV[6])
local percentage = '100.0'
if total > 0 then percentage = string.format('%.1f', math.floor(1000.0 * done / total + 0.5) / 10) end
local items = ''
if ARGV[7] ~= '' then
  local kept = redis.call('HGET', KEYS[5], ARGV[7])
  if kept then items = '"items": ' .. kept .. ', ' end
end
local text = '{"seq": ' .. seq .. ', "completed_steps": ' .. done .. ', "percentage": ' .. percentage .. ', '
             .. items .. string.sub(ARGV[1], 2)
append(KEYS[2], KEYS[7], text, tonumber(ARGV[2]), ttl)
redis.call('EXPIRE', KEYS[1], ttl)
if ARGV[4] == '1' then redis.call('SET', KEYS[6], seq, 'EX', ttl) end
redis.call('PUBLISH', KEYS[3], cjson.encode({type = '""" + EVENT_MESSAGE_TYPE + """', seq = seq,
                                              final = (ARGV[4] == '1'), text = text}))
return text
"""

# A step's item counts, coalesced (executions/item_coalescer.py). Published only when some count is
# higher than what the step has published already (the hash of the run's published counts), and
# never after the run's final event. The history keeps one step_items event per step: the step's
# previous one (kept by text in a second hash) is taken out of the list. `run_items` sums the
# published counts of the run's steps.
# KEYS: seq counter, history list, the group's pub/sub channel, the published counts (hash),
# the steps' item events in the history (hash), the final marker, the trimmed seq;
# ARGV: event JSON object without seq and run_items, history length, ttl seconds, the step id, the
# step's items JSON. Returns the event's text, or nothing when it was not published.
_ITEMS_SCRIPT = _APPEND_LUA + """
if redis.call('EXISTS', KEYS[6]) == 1 then return false end
local step = ARGV[4]
local names = {'total', 'completed', 'failed', 'skipped', 'cached'}
local new = cjson.decode(ARGV[5])
local kept = redis.call('HGET', KEYS[4], step)
if kept then
  local old = cjson.decode(kept)
  local higher = false
  for _, name in ipairs(names) do
    if (tonumber(new[name]) or 0) > (tonumber(old[name]) or 0) then higher = true end
  end
  if not higher then return false end
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[4], step, ARGV[5])
redis.call('EXPIRE', KEYS[4], ttl)
local run = {}
for _, name in ipairs(names) do run[name] = 0 end
for _, value in ipairs(redis.call('HVALS', KEYS[4])) do
  local counts = cjson.decode(value)
  for _, name in ipairs(names) do run[name] = run[name] + (tonumber(counts[name]) or 0) end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ttl)
local text = '{"seq": ' .. seq .. ', "run_items": ' .. cjson.encode(run) .. ', ' .. string.sub(ARGV[1], 2)
local previous = redis.call('HGET', KEYS[5], step)
if previous then redis.call('LREM', KEYS[2], 1, previous) end
redis.call('HSET', KEYS[5], step, text)
redis.call('EXPIRE', KEYS[5], ttl)
append(KEYS[2], KEYS[7], text, tonumber(ARGV[2]), ttl)
redis.call('PUBLISH', KEYS[3], cjson.encode({type = '""" + EVENT_MESSAGE_TYPE + """', seq = seq, final = false,
                                              text = text}))
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


def trimmed_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:trimmed"


def final_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:final"


def items_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:items"


def item_events_key(execution_id: UUID | str) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:progress:{execution_id}:item-events"


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


def history_after(execution_id: UUID | str, *, after: int) -> list[dict] | None:
    """The kept events with seq > after, or None when the history no longer reaches back to
    `after` (trimmed past it: the caller resyncs from a snapshot). A seq missing from the events
    is a superseded step_items event (the step's newer one is kept)."""
    pipe = redis_client().pipeline(transaction=True)
    pipe.lrange(history_key(execution_id), 0, -1)
    pipe.get(trimmed_key(execution_id))
    pipe.get(seq_key(execution_id))
    texts, trimmed, seq = pipe.execute()
    kept = [event for event in (json.loads(text) for text in texts) if event["seq"] > after]
    if trimmed is None:
        # A history written before the trimmed seq was kept: it reaches back only if gap-free.
        if kept and kept[0]["seq"] != after + 1:
            return None
    elif int(trimmed) > after:
        return None
    if not kept and int(seq or 0) > after:
        return None
    return kept


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
            *ITEM_COLUMNS.values(),
        )
    )
    step_items = [step_item_counts(step) for step in steps]
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
        "run_items": run_item_counts(step_items),
        "steps": [
            {"step_id": str(step["id"]), "node_id": step["node_id"], "status": step["status"],
             "started_at": _iso(step["started_at"]), "completed_at": _iso(step["completed_at"]),
             "execution_time_ms": step["execution_time_ms"], "error_message": step["error_message"],
             "items": items}
            for step, items in zip(steps, step_items)
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


_scripts: dict[Any, Any] = {}


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
              finished_key(execution_id), items_key(execution_id), final_key(execution_id),
              trimmed_key(execution_id)],
        args=[json.dumps(rest), settings.PROGRESS_EVENT_HISTORY, settings.PROGRESS_EVENT_TTL_SECONDS,
              "1" if event.get("final") else "0", int(event["completed_steps"]), int(event["total_steps"]),
              str(event.get("step_id") or "")],
    )
    return json.loads(text)


def step_items_event(*, execution_id, step_id, node_id: str, items: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "step_items",
        "execution_id": str(execution_id),
        "node_id": node_id,
        "step_id": str(step_id),
        "items": {name: int(items.get(name) or 0) for name in ITEM_COLUMNS},
        "timestamp": timezone.now().isoformat(),
        "final": False,
    }


def publish_step_items(execution_id, batch: list[tuple[str, str, dict[str, int]]], *,
                       channel: str | None = None) -> list[dict[str, Any]]:
    """Publishes a step_items event for each (step id, node id, items), in one Redis round trip;
    answers the events published (a reading no higher than the step's published counts, or one
    after the run's end, is not)."""
    client = redis_client()
    script = _scripts.get((id(client), "items"))
    if script is None:
        script = _scripts[(id(client), "items")] = client.register_script(_ITEMS_SCRIPT)
    keys = [seq_key(execution_id), history_key(execution_id), channel or group_channel(execution_id),
            items_key(execution_id), item_events_key(execution_id), final_key(execution_id),
            trimmed_key(execution_id)]
    pipe = client.pipeline(transaction=False)
    for step_id, node_id, items in batch:
        event = step_items_event(execution_id=execution_id, step_id=step_id, node_id=node_id, items=items)
        script(keys=keys, args=[json.dumps(event), settings.PROGRESS_EVENT_HISTORY, settings.PROGRESS_EVENT_TTL_SECONDS,
                                str(step_id), json.dumps(event["items"])], client=pipe)
    return [json.loads(text) for text in pipe.execute() if text]


# Per publishing process: the engine's signal for every finished item ends up here.
item_progress = ItemProgressCoalescer(publish=publish_step_items,
                                      rate=lambda: settings.ITEM_EVENTS_PER_SECOND)
atexit.register(item_progress.flush_all)


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
    # The item counts this process holds go out first; after the run's end none are published.
    if status in FINISHED_EXECUTION_STATUSES:
        item_progress.forget(execution_id)
    else:
        item_progress.flush(execution_id)
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
    # Item counts this process holds for the run go out before the step's status (its completion
    # then follows its last counts, and carries them: the script adds the step's published items).
    # A step that finished gets its counts as committed with it (one primary-key read): whichever
    # order the engine sends the two signals in (a failed item's counts come after the step's
    # failure), the finished step's last counts are never behind its status event.
    # The engine passes them when it finishes an itemized step (`items`); the read is for a step of
    # a run this process saw items of, and a run of plain steps (no items anywhere) costs nothing.
    committed = kwargs.get("items")
    if status in FINISHED_STEP_STATUSES and committed is None and item_progress.knows(execution_id):
        try:
            committed = step_item_counts(ComponentExecution.objects.filter(pk=step_id).values(
                *ITEM_COLUMNS.values()).first() or {})
        except Exception:
            logger.exception("could not read the item counts of step %s", step_id)
            committed = None
    if status in FINISHED_STEP_STATUSES:
        if committed is not None:
            item_progress.add(execution_id=execution_id, step_id=step_id, node_id=node_id, items=committed)
    item_progress.flush(execution_id)
    try:
        publish(step_event(execution_id=execution_id, step_id=step_id, node_id=node_id, status=status,
                           previous_status=previous_status, progress=progress))
    except Exception:
        logger.exception("could not publish the progress event of step %s", step_id)


@receiver(step_items_progressed, dispatch_uid="executions.events.on_step_items_progressed")
def on_step_items_progressed(sender, *, execution_id, step_id, node_id, items, **kwargs) -> None:
    try:
        item_progress.add(execution_id=execution_id, step_id=step_id, node_id=node_id, items=items)
    except Exception:
        logger.exception("could not publish the item progress of step %s", step_id)
