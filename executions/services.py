"""Writes of pipeline executions: start, cancel, retry, and the engine's step life cycle.

Every status change is a guarded transition: a conditional `UPDATE ... WHERE status=<expected>`
whose row count says who won (and, for a running step, `attempts=<the claimant's attempt>`, so
a worker that lost its claim can never complete or fail the step). Bookkeeping that must see the
other steps of the run consistently (which children became ready, is the run finished) happens
under a row lock of the execution, so two parents finishing at once cannot both miss, or both
enqueue, their common child. Image work happens outside any transaction.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

import psutil
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, close_old_connections, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from executions import logs, signals
from executions.engine import statements
from executions.engine.errors import InvalidTransition, StepFailure, is_transient
from executions.models import (
    EXECUTION_TRANSITIONS,
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    STEP_TRANSITIONS,
    ComponentExecution,
    ExecutionStatus,
    PipelineExecution,
    StepStatus,
)
from files.models import File
from imageflow.outages import LABELS, unavailable_service
from imageflow.validators import UNSAFE_CHARACTERS
from registry.dag import merge_parameters, validate_definition
from registry.models import Pipeline

logger = logging.getLogger(__name__)


def worker_id() -> str:
    """host:pid of this process (computed per call: prefork children are forked after import)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# --- guarded transitions -------------------------------------------------------------------------

def _send_on_commit(signal, **kwargs) -> None:
    transaction.on_commit(lambda: signal.send_robust(sender=PipelineExecution, **kwargs))


def execution_transition(*, execution_id, expected: str, to: str, **fields: Any) -> bool:
    """Move an execution from `expected` to `to` if it is still `expected`; True if this call won."""
    if to not in EXECUTION_TRANSITIONS[expected]:
        raise InvalidTransition(f"execution {expected} -> {to} is not allowed")
    # One UPDATE is atomic by itself; on_commit runs at once in autocommit, or after the caller's commit.
    won = PipelineExecution.objects.filter(pk=execution_id, status=expected).update(status=to, **fields) == 1
    if won:
        _send_on_commit(signals.execution_status_changed, execution_id=execution_id, status=to,
                        previous_status=expected)
        logs.emit(execution_id=execution_id, level="info", message=f"execution {expected} -> {to}",
                  event="execution_status", status=to, previous_status=expected)
    return won


def step_transition(*, step: ComponentExecution, expected: str, to: str, attempt: int | None = None,
                    log: bool = True, **fields: Any) -> bool:
    """Move a step from `expected` to `to`; with `attempt`, only the claimant of that attempt may.
    `log=False` when the caller writes its own, more telling log line (started, completed, failed)."""
    if to not in STEP_TRANSITIONS[expected]:
        raise InvalidTransition(f"step {expected} -> {to} is not allowed")
    query = ComponentExecution.objects.filter(pk=step.pk, status=expected)
    if attempt is not None:
        query = query.filter(attempts=attempt)
    won = query.update(status=to, **fields) == 1
    if won:
        _send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                        node_id=step.node_id, status=to, previous_status=expected)
        step.status = to
    if won and log:
        logs.emit(execution_id=step.execution_id, level="info", message=f"step {step.node_id}: {expected} -> {to}",
                  step_id=step.pk, node_id=step.node_id, event="step_status", status=to, previous_status=expected)
    return won


# --- start ---------------------------------------------------------------------------------------

def _parse_file_ids(inputs: Any) -> list[uuid.UUID]:
    if not isinstance(inputs, (list, tuple)):
        raise ValidationError({"inputs": ["Must be a list of file ids."]})
    ids, bad = [], []
    for value in inputs:
        try:
            ids.append(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
        except ValueError:
            bad.append(str(value))
    if bad:
        raise ValidationError({"inputs": [f"Not a file id: {', '.join(bad)}."]})
    return ids


def _check_input_files(ids: list[uuid.UUID], user) -> None:
    """Another user's file is answered exactly as a file that does not exist (the API's 404
    rule), so ids cannot be probed: one query scoped to what the user may see, one message."""
    visible = File.objects.filter(id__in=ids)
    if user is not None and not (user.is_staff or user.is_superuser):
        visible = visible.filter(created_by_id=user.pk)
    found = set(visible.values_list("id", flat=True))
    unknown = [str(i) for i in ids if i not in found]
    if unknown:
        raise ValidationError({"inputs": [f"No such file: {', '.join(unknown)}."]})


def _existing_for_key(user, idempotency_key: str | None) -> PipelineExecution | None:
    if not idempotency_key or user is None:
        return None
    return PipelineExecution.objects.filter(created_by=user, idempotency_key=idempotency_key).first()


def execution_start(*, pipeline: Pipeline, inputs: list, parameters: dict | None = None, user,
                    idempotency_key: str | None = None) -> PipelineExecution:
    """Validate the pipeline's current definition and create a pending run with one step per node;
    the root steps are enqueued once the transaction commits. The same (user, idempotency_key)
    returns the existing run instead of creating another."""
    # The key is checked before it is looked up: a NUL cannot even be sent to PostgreSQL.
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or len(idempotency_key) > 255
                                        or UNSAFE_CHARACTERS.search(idempotency_key)):
        raise ValidationError({"idempotency_key": ["Must be a string of at most 255 characters, "
                                                   "without control characters."]})
    existing = _existing_for_key(user, idempotency_key)
    if existing is not None:
        return existing
    file_ids = _parse_file_ids(inputs)
    _check_input_files(file_ids, user)
    pipeline = Pipeline.objects.get(pk=pipeline.pk)  # the current definition and its version, together
    dag = validate_definition(merge_parameters(pipeline.definition, parameters))
    run_inputs = [str(i) for i in file_ids]

    with transaction.atomic():
        try:
            with transaction.atomic():
                execution = PipelineExecution.objects.create(
                    pipeline=pipeline, pipeline_version=pipeline.version, status=ExecutionStatus.PENDING,
                    input_data={"inputs": run_inputs, "parameters": parameters or {},
                                **_request_id_field()},
                    created_by=user, idempotency_key=idempotency_key,
                )
        except IntegrityError:
            winner = _existing_for_key(user, idempotency_key)
            if winner is None:
                raise
            return winner
        steps = [
            ComponentExecution(
                execution=execution, component=node.component, node_id=node.id, status=StepStatus.PENDING,
                waiting_parents=len(dag.parents[node.id]),
                input_data={
                    "component": {"name": node.component.name, "version": node.component.version,
                                  "runner": node.component.runner},
                    "parameters": node.parameters,
                    "parents": dag.parents[node.id],
                    "edges": [edge.as_dict() for edge in dag.incoming[node.id]],
                    "inputs": run_inputs if not dag.parents[node.id] else None,
                },
            )
            for node in dag.nodes.values()
        ]
        ComponentExecution.objects.bulk_create(steps)
        # In the run's transaction, so it is stamped before anything a worker logs for the run.
        logs.emit(execution_id=execution.pk, level="info",
                  message=f"execution created: pipeline {pipeline.name} v{pipeline.version}, {len(steps)} steps, "
                          f"{len(run_inputs)} input files", event="execution_created")
        _enqueue_on_commit([s.pk for s in steps if not dag.parents[s.node_id]])
    return execution


def _request_id_field() -> dict:
    """The X-Request-ID of the API call starting the run, when there is one: the log shipper adds
    it to the `extra` of every log record of the run (imageflow/request_id.py)."""
    from imageflow.request_id import current_request_id

    request_id = current_request_id()
    return {"request_id": request_id} if request_id else {}


def _enqueue_on_commit(step_ids: Iterable) -> None:
    ids = [str(i) for i in step_ids]
    if not ids:
        return

    def send() -> None:
        # Registered after the signals of the change that made these steps ready, so its progress
        # events are out before any of them can start (executions.events.publish).
        _enqueue_steps(ids)

    transaction.on_commit(send)


def _enqueue_steps(ids: list[str]) -> None:
    """Send the tasks of committed ready steps. The commit is what counts: when the broker cannot
    take them, the steps are marked `enqueue_failed` (the outbox) and the next sweep sends them,
    so the request that committed them still succeeds (202) and no client retries into a
    duplicate run."""
    from executions.tasks import step_run

    for position, step_id in enumerate(ids):
        try:
            step_run.apply_async(args=[step_id])
        except Exception as exc:  # broker unreachable (or refusing): the sweep delivers the rest
            unsent = ids[position:]
            logger.warning("could not enqueue %d ready steps (%s: %s); the sweep will send them",
                           len(unsent), type(exc).__name__, exc)
            try:
                ComponentExecution.objects.filter(pk__in=unsent, status=StepStatus.PENDING).update(enqueue_failed=True)
            except DatabaseError:  # the database went too: the sweep finds them as silent ready steps
                logger.warning("could not mark %d steps for the sweep", len(unsent), exc_info=True)
            return


# --- cancel and retry ----------------------------------------------------------------------------

def execution_cancel(*, execution: PipelineExecution, user=None) -> PipelineExecution:
    """Cancel a pending or running run: no step starts any more, pending and running steps become
    cancelled, and a running step's result is discarded when its worker reports it."""
    with transaction.atomic():
        # NO KEY: a claim or completion committing meanwhile holds a KEY SHARE lock on this row (the
        # foreign key of its log line, checked at commit) while it holds its step: FOR UPDATE would
        # wait for it while it waits for us.
        locked = PipelineExecution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if locked.status in FINISHED_EXECUTION_STATUSES:
            raise ValidationError({"status": [f"The execution is already {locked.status}."]})
        now = timezone.now()
        execution_transition(execution_id=locked.pk, expected=locked.status, to=ExecutionStatus.CANCELLED,
                             completed_at=now, error_message=f"Cancelled by {user}" if user else "Cancelled")
        # FOR UPDATE: a claim that commits meanwhile is waited for and its step seen as running
        # (and cancelled as such), instead of being missed as no longer pending.
        for step in locked.steps.select_for_update(no_key=True).filter(
                status__in=[StepStatus.PENDING, StepStatus.RUNNING]).only("id", "execution_id", "node_id", "status"):
            step_transition(step=step, expected=step.status, to=StepStatus.CANCELLED, completed_at=now)
    logs.emit(execution_id=execution.pk, level="warning", message=f"execution cancelled by {user or 'system'}",
              event="execution_cancelled")
    execution.refresh_from_db()
    return execution


def execution_retry(*, execution: PipelineExecution, user) -> PipelineExecution:
    """Re-run a failed (or cancelled) run as a new run of the same steps and inputs: completed
    steps are not run again, their outputs are reused (recorded in `reused_from`). A run is
    retried once: asking again (a double click, two admins) returns the retry that exists."""
    with transaction.atomic():
        execution = PipelineExecution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if execution.status not in {ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}:
            raise ValidationError(
                {"status": [f"Only a failed or cancelled execution can be retried, not {execution.status}."]})
        existing = execution.retries.order_by("created_at").first()
        if existing is not None:
            return existing
        old_steps = list(execution.steps.all())
        now = timezone.now()
        retry = PipelineExecution.objects.create(
            pipeline_id=execution.pipeline_id, pipeline_version=execution.pipeline_version,
            status=ExecutionStatus.PENDING, input_data=execution.input_data, created_by=user, retry_of=execution,
            workflow_id=execution.workflow_id, workflow_version=execution.workflow_version,  # applied workflows
        )
        new_steps = []
        old_status = {old.node_id: old.status for old in old_steps}  # completed ones are reused as completed
        for old in old_steps:
            data = dict(old.input_data or {})
            if old.status == StepStatus.COMPLETED:
                new_steps.append(ComponentExecution(
                    execution=retry, component_id=old.component_id, node_id=old.node_id,
                    status=StepStatus.COMPLETED, input_data=data,
                    output_data={**(old.output_data or {}), "reused": True}, reused_from=old.reused_from or old,
                    execution_time_ms=0, resource_usage={"cpu_seconds": 0.0, "peak_memory_bytes": 0},
                    started_at=now, completed_at=now,
                ))
            else:
                if data.get("parents"):
                    data["inputs"] = None
                waiting = sum(1 for parent in data.get("parents") or [] if old_status.get(parent) != StepStatus.COMPLETED)
                new_steps.append(ComponentExecution(execution=retry, component_id=old.component_id,
                                                    node_id=old.node_id, status=StepStatus.PENDING, input_data=data,
                                                    waiting_parents=waiting))
        ComponentExecution.objects.bulk_create(new_steps)
        status = {s.node_id: s.status for s in new_steps}
        ready = [s.pk for s in new_steps if s.status == StepStatus.PENDING
                 and all(status.get(p) == StepStatus.COMPLETED for p in s.input_data.get("parents", []))]
        reused = sum(1 for s in new_steps if s.status == StepStatus.COMPLETED)
        logs.emit(execution_id=retry.pk, level="info",
                  message=f"retry of {execution.pk}: {reused} completed steps reused, {len(new_steps) - reused} to run",
                  event="execution_retry", retry_of=str(execution.pk))
        _enqueue_on_commit(ready)
    return retry


# --- the engine: one step ----------------------------------------------------------------------

@dataclass
class StepOutcome:
    """What the task should do next: nothing, or deliver itself again after `retry_in` seconds
    (owning `owned_attempt` when it keeps its claim across a transient error)."""

    retry_in: float | None = None
    owned_attempt: int | None = None
    reason: str = ""
    # When this step's current run of transient errors began (epoch seconds), carried by the retry.
    transient_since: float | None = None


def _worker_is_dead(worker: str) -> bool:
    """True when the step's recorded worker process is on this host and no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not psutil.pid_exists(int(pid))


def _step_inputs(step: ComponentExecution, parent_outputs: dict[str, dict | None]) -> list[str]:
    data = step.input_data or {}
    if not data.get("parents"):
        return list(data.get("inputs") or [])
    inputs: list[str] = []
    for edge in data.get("edges", []):
        produced = list((parent_outputs[edge["from"]] or {}).get("files", []))
        if edge.get("outputs") is None:
            inputs.extend(produced)
        else:
            for index in edge["outputs"]:
                if index >= len(produced):
                    raise StepFailure(f"edge {edge['from']} -> {step.node_id} asks for output {index}, "
                                      f"but {edge['from']} produced {len(produced)}")
                inputs.append(produced[index])
    return inputs


def step_execute(*, step_id, owned_attempt: int | None = None, transient_since: float | None = None) -> StepOutcome:
    """Claim a step, run its component and record the result. Safe to call again for the same
    step at any time (duplicate delivery, redelivery after a crash): only one caller runs it.
    `owned_attempt` and `transient_since` come with the retry of a delivery that met a transient
    error (see `_transient_retry`)."""
    claim = statements.claim_step(step_id=step_id, now=timezone.now(), worker=worker_id())
    if claim is not None:  # the usual delivery: one statement claimed it and brought what it needs
        _announce_claim(claim)
        return _run_claimed(claim.fetched, claim.fetched.step.attempts)

    # Not claimable: see why.
    fetched = statements.fetch_step(step_id)
    if fetched is None:
        return StepOutcome(reason="no such step")
    step = fetched.step
    ids = dict(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component))
    if step.status in FINISHED_STEP_STATUSES:
        logs.emit(level="debug", message=f"step {step.node_id} already {step.status}; delivery ignored",
                  event="duplicate_delivery", **ids)
        if step.execution.status not in FINISHED_EXECUTION_STATUSES:
            # a redelivery after the worker died between this step's completion and the run's end
            _finish_run_if_done(step.execution_id)
        return StepOutcome(reason=f"already {step.status}")
    if step.execution.status in FINISHED_EXECUTION_STATUSES:
        if step.status == StepStatus.PENDING:
            step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.CANCELLED, completed_at=timezone.now())
        return StepOutcome(reason=f"execution {step.execution.status}")
    if step.status == StepStatus.PENDING:
        # Its parents had not all completed when the claim looked; the last one to complete
        # enqueues it (and the sweep re-queues a ready step whose message was lost).
        return StepOutcome(reason="parents not completed")

    # running: ours after a transient error, or someone else's (alive or silent)
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)
    own = owned_attempt is not None and owned_attempt == step.attempts
    stale = step.heartbeat_at is None or step.heartbeat_at < cutoff or _worker_is_dead(step.worker)
    if not own and not stale:
        return StepOutcome(retry_in=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS, reason="running elsewhere")
    if not own and step.attempts >= settings.STEP_MAX_ATTEMPTS:
        step_fail(step=step, attempt=step.attempts,
                  message=f"worker lost {step.attempts} times (last {step.worker or 'unknown'}); giving up")
        return StepOutcome(reason="too many attempts")
    attempt = step.attempts + 1
    with transaction.atomic():
        took = ComponentExecution.objects.filter(
            pk=step.pk, status=StepStatus.RUNNING, attempts=step.attempts, worker=step.worker,
        ).update(attempts=attempt, heartbeat_at=now, worker=worker_id()) == 1
        if took:
            if not own:
                logs.emit(level="warning", message=f"step {step.node_id}: worker {step.worker or '?'} went silent; "
                                                    f"running it again (attempt {attempt})", event="step_takeover",
                          **ids)
            _log_started(step, attempt)
    if not took:
        return StepOutcome(reason="taken over by another delivery")
    step.attempts, step.worker = attempt, worker_id()
    return _run_claimed(fetched, attempt, transient_since=transient_since if own else None)


def _announce_claim(claim: statements.Claim) -> None:
    """The claim's console lines and progress events (its log rows are written by its statement)."""
    step = claim.fetched.step
    progress = {"execution_status": ExecutionStatus.RUNNING, "completed_steps": claim.counts.finished_steps,
                "total_steps": claim.counts.total_steps}
    echo = logs.echoes("info")  # the rows are stored already; these are only for the console
    if claim.run_started:
        if echo:
            logs.echo(logs.build(execution_id=step.execution_id, level="info",
                                 message=f"execution {ExecutionStatus.PENDING} -> {ExecutionStatus.RUNNING}"))
        step.execution.status = ExecutionStatus.RUNNING
        _send_on_commit(signals.execution_status_changed, execution_id=step.execution_id,
                        status=ExecutionStatus.RUNNING, previous_status=ExecutionStatus.PENDING, progress=progress)
    if echo:
        logs.echo(logs.build(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                             component=str(step.component), level="info",
                             message=f"step {step.node_id} started (attempt {step.attempts}) on {step.worker}"))
    _send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                    node_id=step.node_id, status=StepStatus.RUNNING, previous_status=StepStatus.PENDING,
                    progress=progress)


class _Watch:
    """One running step as the process's step monitor sees it."""

    def __init__(self, step_pk, attempt: int, rss: int) -> None:
        self.step_pk, self.attempt = step_pk, attempt
        self.lost = threading.Event()  # the step is no longer ours (cancelled, taken over)
        self.peak_rss = rss
        self.next_beat = time.monotonic() + settings.STEP_HEARTBEAT_SECONDS
        self.stopped = False  # set by unwatch: no heartbeat is written for it any more


class _StepMonitor(threading.Thread):
    """One thread per worker process (started with its first step) that keeps the claims of the
    running steps alive (heartbeat_at every STEP_HEARTBEAT_SECONDS), samples the process's memory
    for their peak, and notices when a step is no longer ours so its runner can stop early. A
    thread per step would cost a thread start and join on every step."""

    SAMPLE_SECONDS = 0.05

    def __init__(self) -> None:
        super().__init__(daemon=True, name="step-monitor")
        self.process = psutil.Process()
        self.watches: set[_Watch] = set()
        self.lock = threading.Lock()
        self.busy = threading.Event()

    def watch(self, step: ComponentExecution, attempt: int) -> _Watch:
        watch = _Watch(step.pk, attempt, self.process.memory_info().rss)
        with self.lock:
            self.watches.add(watch)
        self.busy.set()
        return watch

    def unwatch(self, watch: _Watch) -> int:
        """Stops watching (again: a no-op); returns the peak resident memory seen while the step ran."""
        with self.lock:
            self.watches.discard(watch)
            watch.stopped = True
        watch.peak_rss = max(watch.peak_rss, self.process.memory_info().rss)
        return watch.peak_rss

    def run(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # a heartbeat failure must not kill the monitor; the sweep is the backstop
                logger.warning("step monitor: heartbeat round failed", exc_info=True)
                try:
                    connection.close()
                except Exception:
                    pass
                time.sleep(self.SAMPLE_SECONDS)

    def _round(self) -> None:
        self.busy.wait()
        time.sleep(self.SAMPLE_SECONDS)
        with self.lock:
            watches = list(self.watches)
            if not watches:
                self.busy.clear()
        if not watches:
            connection.close()  # idle: hold no database connection
            return
        rss = self.process.memory_info().rss
        now = time.monotonic()
        for watch in watches:
            watch.peak_rss = max(watch.peak_rss, rss)
            if now >= watch.next_beat and not watch.stopped:
                watch.next_beat = now + settings.STEP_HEARTBEAT_SECONDS
                alive = ComponentExecution.objects.filter(
                    pk=watch.step_pk, status=StepStatus.RUNNING, attempts=watch.attempt,
                ).update(heartbeat_at=timezone.now())
                if not alive:
                    watch.lost.set()


_monitor_lock = threading.Lock()
_monitors: dict[int, _StepMonitor] = {}


def _step_monitor() -> _StepMonitor:
    """This process's monitor (a forked pool process starts its own)."""
    pid = os.getpid()
    monitor = _monitors.get(pid)
    if monitor is None or not monitor.is_alive():
        with _monitor_lock:
            monitor = _monitors.get(pid)
            if monitor is None or not monitor.is_alive():
                monitor = _monitors[pid] = _StepMonitor()
                monitor.start()
    return monitor


def _log_started(step: ComponentExecution, attempt: int) -> None:
    logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component),
              level="info", message=f"step {step.node_id} started (attempt {attempt}) on {worker_id()}",
              event="step_started", attempt=attempt)


def _run_claimed(fetched: statements.FetchedStep, attempt: int, *, transient_since: float | None = None) -> StepOutcome:
    """Run a step this delivery holds (claimed or taken over) on its parents' outputs."""
    step = fetched.step
    try:
        input_ids = _step_inputs(step, fetched.parent_outputs)
    except StepFailure as exc:
        step_fail(step=step, attempt=attempt, message=str(exc))
        return StepOutcome(reason="bad inputs")
    ids = dict(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component))
    step.input_data = {**(step.input_data or {}), "inputs": input_ids}
    by_id = {str(f.id): f for f in File.objects.filter(id__in=input_ids)} if input_ids else {}
    monitor = _step_monitor()
    watch = monitor.watch(step, attempt)
    try:
        return _run_watched(step, attempt, input_ids, by_id, ids, monitor, watch, transient_since)
    finally:
        if not watch.stopped:  # whatever happened: a forgotten watch would keep a dead step's claim alive
            monitor.unwatch(watch)


def _run_watched(step, attempt, input_ids, by_id, ids, monitor, watch, transient_since) -> StepOutcome:
    from executions.engine.runners import StepContext, get_runner
    from files.services import file_delete

    context = StepContext(step=step, attempt=attempt, parameters=(step.input_data or {}).get("parameters") or {},
                          inputs=[by_id[i] for i in input_ids if i in by_id], cancelled=watch.lost,
                          created_by_id=step.execution.created_by_id)
    cpu_start = time.thread_time()
    started = time.monotonic()
    try:
        missing = [i for i in input_ids if i not in by_id]
        if missing:
            raise StepFailure(f"input files no longer exist: {', '.join(missing)}")
        result = get_runner(step.component).run(context)
    except Exception as exc:  # classified below: transient -> retry, anything else -> failed
        monitor.unwatch(watch)
        for created in context.created_files:
            file_delete(file=created)
        elapsed_ms = int((time.monotonic() - started) * 1000)
        cause = _describe(exc)
        if is_transient(exc):
            since = transient_since if transient_since is not None else time.time()
            delay = _transient_retry_delay(elapsed=time.time() - since)
            if delay is not None:
                ComponentExecution.objects.filter(pk=step.pk, status=StepStatus.RUNNING, attempts=attempt).update(
                    heartbeat_at=timezone.now() + timedelta(seconds=delay))
                logs.emit(level="warning",
                          message=f"step {step.node_id}: transient error, retrying in {delay:.1f}s: {cause}",
                          event="step_transient_error", attempt=attempt, **ids)
                return StepOutcome(retry_in=delay, owned_attempt=attempt, reason="transient error",
                                   transient_since=since)
            service = unavailable_service(exc)
            what = f"{LABELS[service]} unavailable" if service else "transient errors"
            cause = f"{what} for {time.time() - since:.0f}s (retry budget {settings.STEP_TRANSIENT_RETRY_BUDGET_SECONDS:g}s); gave up: {cause}"
        step_fail(step=step, attempt=attempt, message=cause, execution_time_ms=elapsed_ms)
        return StepOutcome(reason="failed")
    peak_rss = monitor.unwatch(watch)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    cpu = time.thread_time() - cpu_start + result.child_cpu_seconds
    usage = {"cpu_seconds": round(cpu, 4),
             "peak_memory_bytes": max(peak_rss, result.child_peak_memory_bytes),
             "memory_scope": "external process" if result.child_peak_memory_bytes else "worker process"}
    output_data = {"files": [str(f.id) for f in result.outputs], "metrics": result.metrics}
    if result.data is not None:
        output_data["data"] = result.data
    step_complete(step=step, attempt=attempt, output_data=output_data, execution_time_ms=elapsed_ms,
                  resource_usage=usage, created_files=context.created_files)
    return StepOutcome(reason="completed")


def _transient_retry_delay(*, elapsed: float) -> float | None:
    """The pause before the next try of a step whose transient errors began `elapsed` seconds ago,
    or None once they have lasted the budget. The pause is as long as the errors have lasted so
    far (so it doubles), between STEP_RETRY_BACKOFF_SECONDS and STEP_RETRY_BACKOFF_MAX_SECONDS."""
    if elapsed >= settings.STEP_TRANSIENT_RETRY_BUDGET_SECONDS:
        return None
    return min(settings.STEP_RETRY_BACKOFF_MAX_SECONDS, max(settings.STEP_RETRY_BACKOFF_SECONDS, elapsed))


def _describe(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return f"time limit of {settings.STEP_TIME_LIMIT_SECONDS}s exceeded"
    text = str(exc) or exc.__class__.__name__
    return text if isinstance(exc, StepFailure) else f"{exc.__class__.__name__}: {text}"


def _finish_run_if_done(execution_id) -> None:
    """Finish the run if none of its steps is left, under the run's row lock. Called after a
    completion has committed: if this never happens (the worker died in between, or a PostgreSQL
    crash lost this commit), the redelivered task and the sweep call it again."""
    with transaction.atomic():
        execution = _lock_execution(execution_id)
        if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
            _finish_if_done(execution)


def _lock_execution(execution_id) -> PipelineExecution:
    # NO KEY, as in execution_cancel: the row's KEY SHARE locks (log lines' foreign keys) do not wait.
    return PipelineExecution.objects.select_for_update(no_key=True).only("id", "status").get(pk=execution_id)


def step_complete(*, step: ComponentExecution, attempt: int, output_data: dict, execution_time_ms: int,
                  resource_usage: dict, created_files: list[File] = ()) -> bool:
    """Record a step's result if its claim still holds; then enqueue the children that became
    ready, or finish the run when the step was the last. A lost claim discards the result's files."""
    from files.services import file_delete

    line = logs.build(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                      component=str(step.component), level="info",
                      message=f"step {step.node_id} completed in {execution_time_ms} ms: "
                              f"{len(output_data.get('files', []))} outputs",
                      event="step_completed", execution_time_ms=execution_time_ms, **resource_usage)
    won, ready, pending_children, counts = statements.complete_step(
        step=step, attempt=attempt, now=timezone.now(), inputs=list((step.input_data or {}).get("inputs") or []),
        output_data=output_data, execution_time_ms=execution_time_ms,
        resource_usage=resource_usage, line=line)
    if won:
        step.status = StepStatus.COMPLETED
        logs.echo(line)
        _send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                        node_id=step.node_id, status=StepStatus.COMPLETED, previous_status=StepStatus.RUNNING,
                        progress={"execution_status": ExecutionStatus.RUNNING,
                                  "completed_steps": counts.finished_steps, "total_steps": counts.total_steps})
        if attempt > 1:
            _remove_stray_outputs(step, keep=set(output_data.get("files", [])))
        if pending_children:
            _enqueue_on_commit(ready)
        else:  # a leaf, or its children were skipped: the run may be done
            _finish_run_if_done(step.execution_id)
        return True
    for created in created_files:
        file_delete(file=created)
    logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component),
              level="warning", message=f"step {step.node_id}: result of attempt {attempt} discarded "
                                       f"(the step was cancelled or taken over)", event="step_result_discarded")
    return False


def _remove_stray_outputs(step: ComponentExecution, *, keep: set[str]) -> None:
    """Files an earlier, crashed attempt of this step stored before it died."""
    from files.services import file_delete

    for stray in File.objects.filter(metadata__step_id=str(step.pk)).exclude(id__in=list(keep)):
        file_delete(file=stray)


def step_fail(*, step: ComponentExecution, attempt: int, message: str, execution_time_ms: int | None = None) -> bool:
    """Fail a running step (if its claim holds), skip everything that depends on it, and finish the
    run as failed once no other step is still running."""
    with transaction.atomic():
        execution = _lock_execution(step.execution_id)
        # input_data: with the inputs the step was given, when it got that far.
        won = step_transition(step=step, expected=StepStatus.RUNNING, to=StepStatus.FAILED, attempt=attempt,
                              log=False, error_message=message[:10000], execution_time_ms=execution_time_ms,
                              completed_at=timezone.now(), input_data=step.input_data)
        if won:
            _skip_descendants(step)
            if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
                _finish_if_done(execution)
    if won:
        logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                  component=str(step.component), level="error", message=f"step {step.node_id} failed: {message}",
                  event="step_failed")
    else:
        logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                  component=str(step.component), level="warning",
                  message=f"step {step.node_id}: failure of attempt {attempt} discarded (the step was cancelled or "
                          f"taken over): {message}", event="step_result_discarded")
    return won


def _steps_graph(execution_id) -> list[ComponentExecution]:
    return list(ComponentExecution.objects.filter(execution_id=execution_id).only(
        "id", "execution_id", "node_id", "status", "input_data", "component_id"))


def _skip_descendants(step: ComponentExecution) -> None:
    steps = _steps_graph(step.execution_id)
    children: dict[str, list[ComponentExecution]] = {}
    for s in steps:
        for parent in (s.input_data or {}).get("parents", []):
            children.setdefault(parent, []).append(s)
    queue, seen = [step.node_id], {step.node_id}
    while queue:
        for child in children.get(queue.pop(), []):
            if child.node_id in seen:
                continue
            seen.add(child.node_id)
            queue.append(child.node_id)
            if child.status == StepStatus.PENDING:
                step_transition(step=child, expected=StepStatus.PENDING, to=StepStatus.SKIPPED,
                                completed_at=timezone.now(),
                                error_message=f"skipped: upstream step {step.node_id} failed")


def _finish_if_done(execution: PipelineExecution) -> None:
    """Called with the execution row locked."""
    steps = _steps_graph(execution.pk)
    if any(s.status not in FINISHED_STEP_STATUSES for s in steps):
        return
    now = timezone.now()
    if execution.status == ExecutionStatus.PENDING:
        execution_transition(execution_id=execution.pk, expected=ExecutionStatus.PENDING, to=ExecutionStatus.RUNNING,
                             started_at=now)
    failed = [s for s in steps if s.status == StepStatus.FAILED]
    if failed:
        first = ComponentExecution.objects.select_related("component").filter(pk__in=[s.pk for s in failed]).order_by(
            "completed_at").first()
        execution_transition(
            execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.FAILED, completed_at=now,
            error_message=f"node {first.node_id!r} ({first.component}) failed: {first.error_message}"
                          + (f" (and {len(failed) - 1} other failed steps)" if len(failed) > 1 else ""),
        )
        return
    parents = {p for s in steps for p in (s.input_data or {}).get("parents", [])}
    leaves = [s.node_id for s in steps if s.node_id not in parents]
    outputs = {node_id: files for node_id, files in ComponentExecution.objects.filter(
        execution_id=execution.pk, node_id__in=leaves).values_list("node_id", "output_data__files")}
    execution_transition(execution_id=execution.pk, expected=ExecutionStatus.RUNNING, to=ExecutionStatus.COMPLETED,
                         completed_at=now, output_data={"outputs": outputs})


# --- crash recovery ------------------------------------------------------------------------------

def execution_sweep() -> dict[str, int]:
    """Re-deliver steps whose worker went silent past the heartbeat timeout (the delivery takes
    them over or fails them after STEP_MAX_ATTEMPTS), and ready steps whose message was lost."""
    close_old_connections()
    cutoff = timezone.now() - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)
    stale = list(ComponentExecution.objects.filter(
        status=StepStatus.RUNNING, execution__status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING],
    ).filter(Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)).values_list("id", "execution_id", "node_id"))
    # Pending steps silent past the cutoff (a lost message) and those whose task could not be sent
    # (enqueue_failed: at once).
    waiting = ComponentExecution.objects.filter(
        Q(updated_at__lt=cutoff) | Q(enqueue_failed=True), status=StepStatus.PENDING,
        execution__status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING],
    ).only("id", "execution_id", "node_id", "input_data")[:1000]
    ready = []
    for step in waiting:
        parents = step.input_data.get("parents", []) if step.input_data else []
        if not parents or ComponentExecution.objects.filter(
                execution_id=step.execution_id, node_id__in=parents, status=StepStatus.COMPLETED).count() == len(parents):
            ready.append((step.pk, step.execution_id, step.node_id))
    for step_id, execution_id, node_id in stale:
        logs.emit(execution_id=execution_id, step_id=step_id, node_id=node_id, level="warning",
                  message=f"sweep: step {node_id} silent for over {settings.STEP_HEARTBEAT_TIMEOUT_SECONDS}s; re-queued",
                  event="sweep_requeue")
    for step_id, execution_id, node_id in ready:
        logs.emit(execution_id=execution_id, step_id=step_id, node_id=node_id, level="warning",
                  message=f"sweep: ready step {node_id} was never picked up; re-queued", event="sweep_requeue")
    from executions.tasks import step_run

    for step_id, _, _ in stale + ready:
        step_run.apply_async(args=[str(step_id)])
    if ready:
        ComponentExecution.objects.filter(pk__in=[step_id for step_id, _, _ in ready], enqueue_failed=True).update(
            enqueue_failed=False)
    # Runs whose steps have all finished but which are still open: the end of a run is a commit
    # of its own after the last completion, and a crash in between (or of PostgreSQL, losing it)
    # leaves the run open with nothing left to deliver.
    open_steps = ComponentExecution.objects.filter(
        execution=OuterRef("pk"), status__in=[StepStatus.PENDING, StepStatus.RUNNING])
    stranded = list(PipelineExecution.objects.filter(
        status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING], updated_at__lt=cutoff,
    ).filter(Exists(ComponentExecution.objects.filter(execution=OuterRef("pk")))).exclude(Exists(open_steps))
        .order_by().values_list("id", flat=True)[:1000])
    for execution_id in stranded:
        logs.emit(execution_id=execution_id, level="warning",
                  message="sweep: every step had finished but the run was still open; finishing it",
                  event="sweep_finish")
        _finish_run_if_done(execution_id)
    return {"stale": len(stale), "ready": len(ready), "finished": len(stranded)}
