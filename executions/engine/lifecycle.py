"""A worker's life cycle of one step: claim -> run -> complete or fail.

`step_execute` is what a delivery of the step's task does. It claims the step (or takes over the
claim of a worker that went silent), runs the component's runner outside any transaction while
the step monitor keeps the claim alive, and records the result if the claim still holds: a
completion enqueues the children it made ready, a failure skips what depends on the step, and
either may finish the run. Safe to call again for the same step at any time: only one caller
runs it.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta

import psutil
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from executions import logs, signals
from executions.engine import statements
from executions.engine.contracts import output_check
from executions.engine.delivery import enqueue_on_commit
from executions.engine.errors import StepFailure, is_transient
from executions.engine.fanout import step_inputs, step_items_start
from executions.engine.monitor import step_monitor
from executions.engine.runners import StepContext, get_runner
from executions.engine.transitions import (
    finish_if_done,
    finish_run_if_done,
    lock_execution,
    send_on_commit,
    skip_descendants,
    step_transition,
)
from executions.models import (
    FINISHED_EXECUTION_STATUSES,
    FINISHED_STEP_STATUSES,
    ComponentExecution,
    ExecutionStatus,
    StepStatus,
)
from files.models import File
from imageflow.outages import LABELS, unavailable_service


def worker_id() -> str:
    """host:pid of this process (computed per call: prefork children are forked after import)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StepOutcome:
    """What the task should do next: nothing, or deliver itself again after `retry_in` seconds
    (owning `owned_attempt` when it keeps its claim across a transient error)."""

    retry_in: float | None = None
    owned_attempt: int | None = None
    reason: str = ""
    # When this step's current run of transient errors began (epoch seconds), carried by the retry.
    transient_since: float | None = None


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
            finish_run_if_done(step.execution_id)
        return StepOutcome(reason=f"already {step.status}")
    if step.execution.status in FINISHED_EXECUTION_STATUSES:
        if step.status == StepStatus.PENDING:
            step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.CANCELLED, completed_at=timezone.now())
        return StepOutcome(reason=f"execution {step.execution.status}")
    if step.itemized:
        # A map step runs as items: its step task makes them (or offers them again), drains run them.
        return StepOutcome(reason=step_items_start(step.pk))
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
        send_on_commit(signals.execution_status_changed, execution_id=step.execution_id,
                        status=ExecutionStatus.RUNNING, previous_status=ExecutionStatus.PENDING, progress=progress)
    if echo:
        logs.echo(logs.build(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                             component=str(step.component), level="info",
                             message=f"step {step.node_id} started (attempt {step.attempts}) on {step.worker}"))
    send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                    node_id=step.node_id, status=StepStatus.RUNNING, previous_status=StepStatus.PENDING,
                    progress=progress)


def _log_started(step: ComponentExecution, attempt: int) -> None:
    logs.emit(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component),
              level="info", message=f"step {step.node_id} started (attempt {attempt}) on {worker_id()}",
              event="step_started", attempt=attempt)


def _worker_is_dead(worker: str) -> bool:
    """True when the step's recorded worker process is on this host and no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not psutil.pid_exists(int(pid))


def _run_claimed(fetched: statements.FetchedStep, attempt: int, *, transient_since: float | None = None) -> StepOutcome:
    """Run a step this delivery holds (claimed or taken over) on its parents' outputs."""
    step = fetched.step
    try:
        input_ids = step_inputs(step, fetched.parent_outputs)
    except StepFailure as exc:
        step_fail(step=step, attempt=attempt, message=str(exc))
        return StepOutcome(reason="bad inputs")
    ids = dict(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component))
    step.input_data = {**(step.input_data or {}), "inputs": input_ids}
    by_id = {str(f.id): f for f in File.objects.filter(id__in=input_ids)} if input_ids else {}
    monitor = step_monitor()
    watch = monitor.watch(step, attempt)
    try:
        return _run_watched(step, attempt, input_ids, by_id, ids, monitor, watch, transient_since)
    finally:
        if not watch.stopped:  # whatever happened: a forgotten watch would keep a dead step's claim alive
            monitor.unwatch(watch)


def _run_watched(step, attempt, input_ids, by_id, ids, monitor, watch, transient_since) -> StepOutcome:
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
        output_check(step.component, result)
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
                  resource_usage=usage, created_files=context.created_files, lineage=context.lineage(result.outputs))
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


def step_complete(*, step: ComponentExecution, attempt: int, output_data: dict, execution_time_ms: int,
                  resource_usage: dict, created_files: list[File] = (),
                  lineage: list[tuple[str, str]] = ()) -> bool:
    """Record a step's result (and its outputs' lineage) if its claim still holds; then enqueue the
    children that became ready, or finish the run when the step was the last. A lost claim
    discards the result's files."""
    from files.services import file_delete

    line = logs.build(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id,
                      component=str(step.component), level="info",
                      message=f"step {step.node_id} completed in {execution_time_ms} ms: "
                              f"{len(output_data.get('files', []))} outputs",
                      event="step_completed", execution_time_ms=execution_time_ms, **resource_usage)
    won, ready, pending_children, counts = statements.complete_step(
        step=step, attempt=attempt, now=timezone.now(), inputs=list((step.input_data or {}).get("inputs") or []),
        output_data=output_data, execution_time_ms=execution_time_ms,
        resource_usage=resource_usage, line=line, lineage=lineage)
    if won:
        step.status = StepStatus.COMPLETED
        logs.echo(line)
        send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                        node_id=step.node_id, status=StepStatus.COMPLETED, previous_status=StepStatus.RUNNING,
                        progress={"execution_status": ExecutionStatus.RUNNING,
                                  "completed_steps": counts.finished_steps, "total_steps": counts.total_steps})
        if attempt > 1:
            _remove_stray_outputs(step, keep=set(output_data.get("files", [])))
        if pending_children:
            enqueue_on_commit(ready, ready)
        else:  # a leaf, or its children were skipped: the run may be done
            finish_run_if_done(step.execution_id)
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
        execution = lock_execution(step.execution_id)
        # input_data: with the inputs the step was given, when it got that far.
        won = step_transition(step=step, expected=StepStatus.RUNNING, to=StepStatus.FAILED, attempt=attempt,
                              log=False, error_message=message[:10000], execution_time_ms=execution_time_ms,
                              completed_at=timezone.now(), input_data=step.input_data)
        if won:
            skip_descendants(step)
            if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
                finish_if_done(execution)
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
