"""The statements of the engine's hot path: reading a step, claiming it, completing it.

A no-op step costs the engine little more than these three round trips, which is what keeps
its per-step overhead near a bare Celery chain's (bench/engine_overhead.py). They are plain SQL
because each one does what the ORM would need several statements for:

- the read brings the step, its run's status and owner, its component and its parents' states;
- the claim moves the step pending -> running, the run pending -> running when it is the first,
  and writes their log lines, in one statement (one implicit transaction);
- the completion moves the step running -> completed, counts down `waiting_parents` of its
  pending children (a row lock per child, so two parents completing at once serialize on the
  child and exactly one of them sees it reach 0) and writes its log line and its outputs' lineage
  (executions.models.FileLineage), in one statement.

They run as server-side prepared statements on the request's Django connection: planning these
statements costs more than running them, and a prepared statement is planned once per
connection (ENGINE_PREPARED_STATEMENTS=false turns that off, for a transaction-pooling PgBouncer
older than 1.21, which cannot keep prepared statements).

Every move is still a guarded transition (`WHERE status = <expected>`, and for the completion
`attempts = <the claimant's attempt>`), so a late or duplicate delivery can never win it.
The step life cycle (`executions.engine.lifecycle`) decides what to do with the results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from django.conf import settings
from django.db import connection

from executions.log_models import ExecutionLogRecord
from executions.models import (
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    ExecutionStatus,
    FileLineage,
    PipelineExecution,
    StepStatus,
)
from files.models import File
from registry.models import Component

_STEPS = ComponentExecution._meta.db_table
_RUNS = PipelineExecution._meta.db_table
_COMPONENTS = Component._meta.db_table
_LOGS = ExecutionLogRecord._meta.db_table
_LINEAGE = FileLineage._meta.db_table
_FILES = File._meta.db_table

def _parents_of(alias: str) -> str:
    """The parents' (status, output_data) of the step row `alias`, as a JSON object by node id."""
    return f"""(SELECT jsonb_object_agg(p.node_id, jsonb_build_array(p.status, p.output_data))
          FROM {_STEPS} p
         WHERE p.execution_id = {alias}.execution_id
           AND p.node_id IN (SELECT jsonb_array_elements_text({alias}.input_data -> 'parents')))"""


_FETCH_SQL = f"""
SELECT s.id, s.execution_id, s.node_id, s.status, s.input_data, s.attempts, s.heartbeat_at, s.worker,
       s.component_id, e.status, e.created_by, c.name, c.version, c.runner, c.docker_image, {_parents_of("s")}
  FROM {_STEPS} s
  JOIN {_RUNS} e ON e.id = s.execution_id
  JOIN {_COMPONENTS} c ON c.id = s.component_id
 WHERE s.id = %s
"""

# A log line inserted by a statement only when the CTE it selects from changed a row; {p} is the
# line's parameter prefix.
_LOG_COLUMNS = '(execution_id, step_id, node_id, component, level, message, extra, "timestamp")'


def _log_values(p: str) -> str:
    return (f"%({p}execution_id)s::uuid, %({p}step_id)s::uuid, %({p}node_id)s, %({p}component)s, %({p}level)s, "
            f"%({p}message)s, %({p}extra)s::jsonb, %({p}timestamp)s::timestamptz")


# The run's step count and finished-step count, as the statement's snapshot sees them (before its
# own change): what the progress event of the change reports, without another query. One scan of
# the run's steps (by execution_id), whatever the size of the table.
_FINISHED = ", ".join(f"'{status.value}'" for status in sorted(FINISHED_STEP_STATUSES))
_COUNTS_CTE = f"""counts AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE status IN ({_FINISHED})) AS finished
      FROM {_STEPS} WHERE execution_id = %(execution)s
)"""
_COUNTS = "(SELECT total FROM counts), (SELECT finished FROM counts)"

def _only_filter(column: str, status) -> str:
    """`column = status` written so the planner cannot use a status index for it: these statements
    are prepared with a generic plan, and a plan that scans every pending run or step of the table
    through the status index (instead of the few rows of this run by its key) grows with the table."""
    return f"({column} = '{status.value}') IS TRUE"


# The claim of a delivery: a pending step of a pending or running run whose parents have all
# completed becomes running, the run becomes running with its first step, and their log lines
# are written; the row that comes back is everything the step needs to run. No row: the step
# was not claimable (finished, claimed or running elsewhere, parents not done, run ended), which
# the caller sorts out with `fetch_step`.
_CLAIM_SQL = f"""
WITH target AS (
    SELECT s.id
      FROM {_STEPS} s JOIN {_RUNS} e ON e.id = s.execution_id
     WHERE s.id = %(step)s AND s.status = '{StepStatus.PENDING.value}' AND NOT (s.input_data ? 'items')
       AND e.status IN ('{ExecutionStatus.PENDING.value}', '{ExecutionStatus.RUNNING.value}')
       AND NOT EXISTS (
           SELECT FROM {_STEPS} p
            WHERE p.execution_id = s.execution_id AND p.status <> '{StepStatus.COMPLETED.value}'
              AND p.node_id IN (SELECT jsonb_array_elements_text(s.input_data -> 'parents')))
), claimed AS (
    UPDATE {_STEPS} s
       SET status = '{StepStatus.RUNNING.value}', attempts = s.attempts + 1, started_at = %(now)s,
           heartbeat_at = %(now)s, worker = %(worker)s
      FROM target
     WHERE s.id = target.id AND s.status = '{StepStatus.PENDING.value}'
 RETURNING s.id, s.execution_id, s.node_id, s.input_data, s.attempts, s.component_id
), run AS (
    SELECT e.status, e.created_by FROM {_RUNS} e WHERE e.id = (SELECT execution_id FROM claimed)
), started AS (
    UPDATE {_RUNS} e SET status = '{ExecutionStatus.RUNNING.value}', started_at = %(now)s
     WHERE e.id = (SELECT execution_id FROM claimed) AND {_only_filter("e.status", ExecutionStatus.PENDING)}
 RETURNING e.id
), component AS (
    SELECT c.name, c.version, c.runner, c.docker_image, c.output_schema FROM {_COMPONENTS} c
     WHERE c.id = (SELECT component_id FROM claimed)
), lines AS (
    -- one INSERT, in this order: the run's start is logged before its first step's
    INSERT INTO {_LOGS} {_LOG_COLUMNS}
    SELECT execution_id, step_id, node_id, component, level, message, extra, at FROM (
        SELECT 1 AS position, started.id AS execution_id, NULL::uuid AS step_id, '' AS node_id, '' AS component,
               'info' AS level,
               'execution {ExecutionStatus.PENDING.value} -> {ExecutionStatus.RUNNING.value}' AS message,
               jsonb_build_object('event', 'execution_status', 'status', '{ExecutionStatus.RUNNING.value}',
                                  'previous_status', '{ExecutionStatus.PENDING.value}') AS extra,
               %(now)s::timestamptz AS at
          FROM started
        UNION ALL
        SELECT 2, claimed.execution_id, claimed.id, claimed.node_id, component.name || ':' || component.version,
               'info', 'step ' || claimed.node_id || ' started (attempt ' || claimed.attempts || ') on ' || %(worker)s,
               jsonb_build_object('event', 'step_started', 'attempt', claimed.attempts), %(now)s::timestamptz
          FROM claimed, component
    ) AS line
    ORDER BY line.position
), counts AS (
    SELECT count(*) AS total, count(*) FILTER (WHERE status IN ({_FINISHED})) AS finished
      FROM {_STEPS} WHERE execution_id = (SELECT execution_id FROM claimed)
)
SELECT claimed.id, claimed.execution_id, claimed.node_id, claimed.input_data, claimed.attempts, claimed.component_id,
       run.status, run.created_by, component.name, component.version, component.runner, component.docker_image,
       {_parents_of("claimed")}, EXISTS (SELECT FROM started), counts.total, counts.finished, component.output_schema
  FROM claimed, run, component, counts
"""

_COMPLETE_SQL = f"""
WITH done AS (
    UPDATE {_STEPS}
       SET status = '{StepStatus.COMPLETED.value}', output_data = %(output_data)s::jsonb,
           input_data = jsonb_set(coalesce(input_data, '{{}}'::jsonb), '{{inputs}}', %(inputs)s::jsonb),
           execution_time_ms = %(execution_time_ms)s, resource_usage = %(resource_usage)s::jsonb,
           completed_at = %(now)s, heartbeat_at = %(now)s
     WHERE id = %(step)s AND status = '{StepStatus.RUNNING.value}' AND attempts = %(attempt)s
 RETURNING id
), children AS (
    UPDATE {_STEPS} AS child SET waiting_parents = child.waiting_parents - 1
     WHERE child.execution_id = %(execution)s AND {_only_filter("child.status", StepStatus.PENDING)}
       AND child.input_data -> 'parents' ? %(node)s AND EXISTS (SELECT FROM done)
 RETURNING child.id, child.waiting_parents, child.input_data ->> 'queue' AS queue,
           (child.input_data -> 'items' ->> 'streams_from') IS NOT NULL AS streams
), line AS (
    INSERT INTO {_LOGS} {_LOG_COLUMNS} SELECT {_log_values("line_")} FROM done
), lineage AS (
    -- the outputs' lineage, with the completion or not at all (a file deleted meanwhile has none)
    INSERT INTO {_LINEAGE} (file_id, derived_from_id, step_id)
    SELECT edge.file, edge.source, %(step)s FROM jsonb_to_recordset(%(lineage)s::jsonb) AS edge(file uuid, source uuid)
     WHERE EXISTS (SELECT FROM done)
       AND EXISTS (SELECT FROM {_FILES} f WHERE f.id = edge.file)
       AND EXISTS (SELECT FROM {_FILES} f WHERE f.id = edge.source)
    ON CONFLICT DO NOTHING
), {_COUNTS_CTE}
SELECT EXISTS (SELECT FROM done),
       -- (a child streaming from this step needs no task: its items were given their inputs one by one)
       ARRAY(SELECT jsonb_build_array(id, queue) FROM children WHERE waiting_parents <= 0 AND NOT streams),
       (SELECT count(*) FROM children), {_COUNTS}
"""


def _execute(sql: str, params: dict[str, Any]) -> tuple | None:
    """Runs one of these statements and returns its row, with Django's connection handling and
    error translation (an OperationalError is django.db's, as everywhere else)."""
    connection.close_if_health_check_failed()  # as a Django cursor would (CONN_HEALTH_CHECKS)
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    prepare = settings.ENGINE_PREPARED_STATEMENTS
    if prepare and raw.prepare_threshold is None:  # Django turns preparing off; only these cursors ask for it
        raw.prepare_threshold = 5
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=prepare or None)
        return cursor.fetchone()


@dataclass
class Counts:
    total_steps: int
    finished_steps: int


@dataclass
class FetchedStep:
    step: ComponentExecution  # with .execution (id, status, created_by_id) and .component loaded
    parents: dict[str, tuple[str, dict | None]] = field(default_factory=dict)  # node id -> (status, output_data)

    @property
    def parent_outputs(self) -> dict[str, dict | None]:
        return {node_id: output for node_id, (_, output) in self.parents.items()}


def _json(value: Any) -> Any:
    # Django loads jsonb as text (JSONField decodes it); raw queries get the text too.
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _step_from_row(row) -> FetchedStep:
    (pk, execution_id, node_id, status, input_data, attempts, heartbeat_at, worker, component_id,
     execution_status, created_by_id, name, version, runner, docker_image, parents) = row
    # Partly loaded instances: a field not read here is fetched by Django if something asks for it.
    step = _loaded(ComponentExecution, id=pk, execution_id=execution_id, node_id=node_id, status=status,
                   input_data=_json(input_data), attempts=attempts, heartbeat_at=heartbeat_at, worker=worker,
                   component_id=component_id)
    step.execution = _loaded(PipelineExecution, id=execution_id, status=execution_status, created_by_id=created_by_id)
    step.component = _loaded(Component, id=component_id, name=name, version=version, runner=runner,
                             docker_image=docker_image)
    states = _json(parents) or {}
    return FetchedStep(step=step, parents={node: (state[0], state[1]) for node, state in states.items()})


def fetch_step(step_id: UUID | str) -> FetchedStep | None:
    with connection.cursor() as cursor:
        cursor.execute(_FETCH_SQL, [UUID(str(step_id))])
        row = cursor.fetchone()
    return None if row is None else _step_from_row(row)


@dataclass
class Claim:
    fetched: FetchedStep  # the step as claimed: running, attempts counted
    run_started: bool  # the run became running with this step
    counts: Counts


def _loaded(model, **values):
    """An instance as the ORM would load it with .only(*values): from_db wants the values in the
    model's field order."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(None, names, [values[name] for name in names])


def _line(prefix: str, record) -> dict[str, Any]:
    return {f"{prefix}execution_id": record.execution_id, f"{prefix}step_id": record.step_id,
            f"{prefix}node_id": record.node_id, f"{prefix}component": record.component,
            f"{prefix}level": record.level, f"{prefix}message": record.message,
            f"{prefix}extra": json.dumps(record.extra), f"{prefix}timestamp": record.timestamp}


def claim_step(*, step_id: UUID | str, now: datetime, worker: str) -> Claim | None:
    """The claim of a delivery, or None when the step was not claimable."""
    row = _execute(_CLAIM_SQL, {"step": UUID(str(step_id)), "now": now, "worker": worker})
    if row is None:
        return None
    (pk, execution_id, node_id, input_data, attempts, component_id, execution_status, created_by_id, name, version,
     runner, docker_image, parents, run_started, total, finished, output_schema) = row
    fetched = _step_from_row((pk, execution_id, node_id, "running", input_data, attempts, now, worker, component_id,
                              execution_status, created_by_id, name, version, runner, docker_image, parents))
    # what the output contract checks (executions.engine.contracts), read with the claim
    fetched.step.component.output_schema = _json(output_schema)
    return Claim(fetched=fetched, run_started=run_started, counts=Counts(total_steps=total, finished_steps=finished))


def complete_step(*, step: ComponentExecution, attempt: int, now: datetime, inputs: list[str], output_data: dict,
                  execution_time_ms: int, resource_usage: dict, line,
                  lineage: list[tuple[str, str]] = ()) -> tuple[bool, dict[UUID, str | None], int, Counts]:
    """(won, the children that became ready (id -> queue), how many pending children the step has,
    the run's counts with this step finished). `lineage`: (output file id, the input file id it
    was derived from) pairs, recorded only if the completion wins."""
    row = _execute(_COMPLETE_SQL, {
            "lineage": json.dumps([{"file": str(f), "source": str(source)} for f, source in lineage]),
            "output_data": json.dumps(output_data), "inputs": json.dumps(inputs), "execution_time_ms": execution_time_ms,
            "resource_usage": json.dumps(resource_usage), "now": now, "step": step.pk, "attempt": attempt,
            "execution": step.execution_id, "node": step.node_id, **_line("line_", line)})
    won, ready, pending_children, total, finished = row
    ready = {UUID(step_id): queue for step_id, queue in (_json(pair) for pair in ready or [])}
    return won, ready, pending_children, Counts(total_steps=total, finished_steps=finished + 1)
