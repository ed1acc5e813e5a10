"""The statements of an item's hot path: claiming the next ready item of a run, completing it.

As for steps (executions.engine.statements), each is one statement doing what the ORM would need
several for, prepared once per connection:

- the claim takes the lowest ready item of a run (`FOR UPDATE SKIP LOCKED` on the partial index
  of ready items, so two workers never wait for each other and never take the same item), moves
  it pending -> running, and moves its step and its run to running with their first item, with
  their log lines;
- the completion moves the item running -> completed (guarded by its attempt), counts it in its
  step (a row lock on the step: exactly one completion sees the step's last item finish), gives
  its outputs to the item of the same index of every step streaming from it (which becomes ready),
  and writes its outputs' lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from executions.engine.statements import _FILES, _LINEAGE, _LOG_COLUMNS, _LOGS, _execute, _json, _loaded, _only_filter
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepItem, StepStatus
from registry.models import Component

_ITEMS = StepItem._meta.db_table
_STEPS = ComponentExecution._meta.db_table
_RUNS = PipelineExecution._meta.db_table
_COMPONENTS = Component._meta.db_table

_CLAIM_SQL = f"""
WITH run AS (
    SELECT e.id, e.created_by FROM {_RUNS} e
     WHERE e.id = %(execution)s
       AND e.status IN ('{ExecutionStatus.PENDING.value}', '{ExecutionStatus.RUNNING.value}')
), target AS (
    SELECT i.id FROM {_ITEMS} i
     WHERE i.execution_id = %(execution)s AND i.status = '{StepStatus.PENDING.value}' AND i.waiting = 0
       AND i.step_id = ANY(%(steps)s) AND (i.not_before IS NULL OR i.not_before <= %(now)s)
       AND EXISTS (SELECT FROM run)
     ORDER BY i.index
     LIMIT 1
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {_ITEMS} i
       SET status = '{StepStatus.RUNNING.value}', attempts = i.attempts + 1, started_at = %(now)s,
           heartbeat_at = %(now)s, worker = %(worker)s, not_before = NULL
      FROM target
     WHERE i.id = target.id
 RETURNING i.id, i.step_id, i.index, i.inputs, i.attempts, i.metrics
), step AS (
    SELECT s.id, s.node_id, s.input_data, s.component_id, s.item_count FROM {_STEPS} s
     WHERE s.id = (SELECT step_id FROM claimed)
), step_started AS (
    UPDATE {_STEPS} s
       SET status = '{StepStatus.RUNNING.value}', attempts = 1, started_at = %(now)s, worker = %(worker)s
     WHERE s.id = (SELECT step_id FROM claimed) AND {_only_filter("s.status", StepStatus.PENDING)}
 RETURNING s.id
), run_started AS (
    UPDATE {_RUNS} e SET status = '{ExecutionStatus.RUNNING.value}', started_at = %(now)s
     WHERE e.id = %(execution)s AND EXISTS (SELECT FROM claimed) AND {_only_filter("e.status", ExecutionStatus.PENDING)}
 RETURNING e.id
), component AS (
    SELECT c.id, c.name, c.version, c.runner, c.docker_image, c.deterministic, c.output_schema, c.model_file_id,
           c.model_spec FROM {_COMPONENTS} c
     WHERE c.id = (SELECT component_id FROM step)
), lines AS (
    INSERT INTO {_LOGS} {_LOG_COLUMNS}
    SELECT execution_id, step_id, node_id, component, level, message, extra, at FROM (
        SELECT 1 AS position, run_started.id AS execution_id, NULL::uuid AS step_id, '' AS node_id, '' AS component,
               'info' AS level,
               'execution {ExecutionStatus.PENDING.value} -> {ExecutionStatus.RUNNING.value}' AS message,
               jsonb_build_object('event', 'execution_status', 'status', '{ExecutionStatus.RUNNING.value}',
                                  'previous_status', '{ExecutionStatus.PENDING.value}') AS extra,
               %(now)s::timestamptz AS at
          FROM run_started
        UNION ALL
        SELECT 2, %(execution)s, step.id, step.node_id, component.name || ':' || component.version, 'info',
               'step ' || step.node_id || ' started: ' || step.item_count || ' items, first on ' || %(worker)s,
               jsonb_build_object('event', 'step_started', 'attempt', 1, 'items', step.item_count), %(now)s::timestamptz
          FROM step_started, step, component
    ) AS line
    ORDER BY line.position
)
SELECT claimed.id, claimed.step_id, claimed.index, claimed.inputs, claimed.attempts, claimed.metrics,
       step.node_id, step.input_data, step.component_id, step.item_count,
       component.name, component.version, component.runner, component.docker_image, component.deterministic,
       component.output_schema, component.model_file_id, component.model_spec, run.created_by, EXISTS (SELECT FROM step_started), EXISTS (SELECT FROM run_started)
  FROM claimed, step, component, run
"""

_COMPLETE_SQL = f"""
WITH done AS (
    UPDATE {_ITEMS}
       SET status = '{StepStatus.COMPLETED.value}', outputs = %(outputs)s::jsonb, metrics = %(metrics)s::jsonb,
           execution_time_ms = %(execution_time_ms)s, completed_at = %(now)s, heartbeat_at = %(now)s,
           reused_from_id = %(reused_from)s
     WHERE id = %(item)s AND status = '{StepStatus.RUNNING.value}' AND attempts = %(attempt)s
 RETURNING id
), counted AS (
    UPDATE {_STEPS} s
       SET items_completed = s.items_completed + 1, items_cached = s.items_cached + %(cached)s
     WHERE s.id = %(step)s AND EXISTS (SELECT FROM done)
 RETURNING s.item_count, s.items_completed, s.items_failed, s.items_skipped, s.items_cached
), followers AS (
    UPDATE {_ITEMS} child SET inputs = %(outputs)s::jsonb, waiting = child.waiting - 1
     WHERE child.step_id IN (SELECT f.id FROM {_STEPS} f
                              WHERE f.execution_id = %(execution)s
                                AND f.input_data -> 'items' ->> 'streams_from' = %(node)s)
       AND child.index = %(index)s AND {_only_filter("child.status", StepStatus.PENDING)}
       AND EXISTS (SELECT FROM done)
 RETURNING child.id, child.waiting
), lineage AS (
    INSERT INTO {_LINEAGE} (file_id, derived_from_id, step_id, item_id)
    SELECT edge.file, edge.source, %(step)s, %(item)s
      FROM jsonb_to_recordset(%(lineage)s::jsonb) AS edge(file uuid, source uuid)
     WHERE EXISTS (SELECT FROM done)
       AND EXISTS (SELECT FROM {_FILES} f WHERE f.id = edge.file)
       AND EXISTS (SELECT FROM {_FILES} f WHERE f.id = edge.source)
    ON CONFLICT DO NOTHING
)
SELECT EXISTS (SELECT FROM done), (SELECT count(*) FROM followers WHERE waiting <= 0),
       counted.item_count, counted.items_completed, counted.items_failed, counted.items_skipped, counted.items_cached
  FROM (SELECT 1) AS one LEFT JOIN counted ON TRUE
"""


@dataclass
class ItemCounts:
    total: int
    completed: int
    failed: int
    skipped: int
    cached: int

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.skipped

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed, "skipped": self.skipped,
                "cached": self.cached}


@dataclass
class ItemClaim:
    item: StepItem  # with .step (with .component and .execution loaded)
    step_started: bool
    run_started: bool


def item_claim(*, execution_id, now: datetime, worker: str, steps: list) -> ItemClaim | None:
    """The lowest ready item of the run among those of `steps` (the steps of a drain's queue),
    claimed; None when there is none (or the run has ended)."""
    row = _execute(_CLAIM_SQL, {"execution": execution_id, "now": now, "worker": worker,
                                "steps": [UUID(str(step)) for step in steps]})
    if row is None:
        return None
    (pk, step_id, index, inputs, attempts, metrics, node_id, input_data, component_id, item_count,
     name, version, runner, docker_image, deterministic, output_schema, model_file_id, model_spec, created_by_id,
     step_started, run_started) = row
    item = _loaded(StepItem, id=pk, execution_id=execution_id, step_id=step_id, index=index, status="running",
                   inputs=_json(inputs), attempts=attempts, metrics=_json(metrics), heartbeat_at=now, worker=worker)
    step = _loaded(ComponentExecution, id=step_id, execution_id=execution_id, node_id=node_id, status="running",
                   input_data=_json(input_data), component_id=component_id, item_count=item_count, attempts=1)
    # (what the runners, the cache and the output contract read: no deferred field is fetched per item)
    step.component = _loaded(Component, id=component_id, name=name, version=version, runner=runner,
                             docker_image=docker_image, deterministic=deterministic,
                             output_schema=_json(output_schema), model_file_id=model_file_id,
                             model_spec=_json(model_spec))
    step.execution = _loaded(PipelineExecution, id=execution_id, status=ExecutionStatus.RUNNING,
                             created_by_id=created_by_id)
    item.step = step
    return ItemClaim(item=item, step_started=step_started, run_started=run_started)


def item_complete(*, item: StepItem, now: datetime, outputs: list[str], metrics: dict[str, Any],
                  execution_time_ms: int, lineage: list[tuple[str, str]] = (), reused_from=None,
                  cached: bool = False) -> tuple[bool, int, ItemCounts | None]:
    """(won, how many streaming items became ready, the step's item counts after it)."""
    row = _execute(_COMPLETE_SQL, {
        "item": item.pk, "attempt": item.attempts, "step": item.step_id, "execution": item.execution_id,
        "node": item.step.node_id, "index": item.index, "outputs": json.dumps(outputs), "metrics": json.dumps(metrics),
        "execution_time_ms": execution_time_ms, "now": now, "reused_from": reused_from, "cached": int(cached),
        "lineage": json.dumps([{"file": str(f), "source": str(source)} for f, source in lineage]),
    })
    won, ready, total, completed, failed, skipped, cached_count = row
    counts = ItemCounts(total, completed, failed, skipped, cached_count) if won else None
    return won, ready, counts
