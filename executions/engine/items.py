"""A worker's life cycle of items: drain a run's ready items, claim -> run -> complete or fail.

`items_drain` is what a delivery of the drain task of a run does: it claims the run's lowest
ready item (executions.engine.item_statements), runs the component's runner on it while the step
monitor keeps the item's claim alive, records the result if the claim still holds, and goes on
with the next ready item until there is none or its slice (ITEM_DRAIN_SLICE_SECONDS) is over;
then it sends itself again, behind the other runs' messages. Any number of drains of one run
may run at once on any host: each item is claimed by exactly one of them, and a completion whose
claim was lost (cancelled, taken over) is discarded with its files.

The item that finishes a step's last item finishes the step (`step_items_finalize`): its outputs
are the completed items' outputs in order, and from there the step's life is the one of any
step (executions.engine.lifecycle.step_complete: children, the run's end).

A failed item does what its run's `on_item_error` says: `fail` fails its step (and so the run,
naming the node, the item's input files and the cause), cancelling the step's other items and
those of the steps after it; `continue` skips the items that depend on it (the same index of
the steps streaming from it) and lets the rest finish.
"""

from __future__ import annotations

import socket
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from executions import logs, signals
from executions.engine import item_statements
from executions.engine.contracts import output_check
from executions.engine.errors import StepFailure, is_transient
from executions.engine.fanout import drains_send, streams_by_parent
from executions.engine.lifecycle import (
    _describe,
    _transient_retry_delay,
    _worker_is_dead,
    step_complete,
    worker_id,
)
from executions.engine.monitor import step_monitor
from executions.engine.runners import StepContext, get_runner
from executions.engine.transitions import (
    descendants,
    finish_if_done,
    lock_execution,
    send_on_commit,
    skip_descendants,
    step_transition,
    steps_graph,
)
from executions.metrics import CACHE_LOOKUPS, ITEM_DURATION
from executions.models import ComponentExecution, ExecutionStatus, StepItem, StepStatus
from files.models import File
from imageflow.outages import LABELS, unavailable_service


def items_drain(*, execution_id, queue: str | None = None) -> str:
    """Run ready items of one run, one after another, for one slice: those of its steps routed to
    `queue` (None: the default queue)."""
    deadline = time.monotonic() + settings.ITEM_DRAIN_SLICE_SECONDS
    steps, across = _queue_steps(execution_id, queue)
    if not steps:
        return "no items on this queue"
    ran = 0
    while True:
        if time.monotonic() >= deadline:
            if StepItem.objects.filter(execution_id=execution_id, step_id__in=steps, status=StepStatus.PENDING,
                                       waiting=0).exists():
                drains_send(execution_id, 1, queue=queue)  # the rest after the other runs' waiting messages
            return f"{ran} items; slice over"
        claim = item_statements.item_claim(execution_id=execution_id, now=timezone.now(), worker=worker_id(),
                                           steps=steps)
        if claim is None:
            if items_recover(execution_id):
                continue
            if across and StepItem.objects.filter(step_id__in=across, status=StepStatus.PENDING).exists():
                # Items that stream from a step on another queue: their parents' drains cannot take
                # them, so this queue's drain looks again in a moment.
                drains_send(execution_id, 1, queue=queue, countdown=ITEM_POLL_SECONDS)
            return f"{ran} items"
        _announce(claim)
        item_run(claim.item)
        ran += 1


ITEM_POLL_SECONDS = 0.5


def _queue_steps(execution_id, queue: str | None) -> tuple[list, list]:
    """The itemized steps of the run routed to `queue`, and those of them that stream from a step
    of another queue."""
    rows = list(ComponentExecution.objects.filter(execution_id=execution_id, input_data__has_key="items")
                .values_list("id", "node_id", "input_data__queue", "input_data__items__streams_from"))
    queue_of = {node_id: step_queue or None for _, node_id, step_queue, _ in rows}
    mine = [(pk, parent) for pk, node_id, step_queue, parent in rows if (step_queue or None) == (queue or None)]
    across = [pk for pk, parent in mine if parent and queue_of.get(parent) != (queue or None)]
    return [pk for pk, _ in mine], across


def _announce(claim: item_statements.ItemClaim) -> None:
    step = claim.item.step
    if claim.run_started:
        send_on_commit(signals.execution_status_changed, execution_id=step.execution_id,
                       status=ExecutionStatus.RUNNING, previous_status=ExecutionStatus.PENDING)
    if claim.step_started:
        send_on_commit(signals.step_status_changed, execution_id=step.execution_id, step_id=step.pk,
                       node_id=step.node_id, status=StepStatus.RUNNING, previous_status=StepStatus.PENDING)


def items_recover(execution_id) -> bool:
    """Running items of the run whose worker went silent (heartbeat older than the timeout) or
    died (a process of this host that no longer exists) go back to pending, to run again; past
    STEP_MAX_ATTEMPTS they fail. True when one was put back."""
    cutoff = timezone.now() - timedelta(seconds=settings.STEP_HEARTBEAT_TIMEOUT_SECONDS)
    here = f"{socket.gethostname()}:"
    lost = [item for item in StepItem.objects.filter(execution_id=execution_id, status=StepStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True) | Q(worker__startswith=here)).select_related(
        "step__component").only("id", "execution_id", "step_id", "index", "attempts", "worker", "heartbeat_at",
                                "inputs", "step__id", "step__execution_id", "step__node_id", "step__input_data",
                                "step__component__name", "step__component__version")
        if item.heartbeat_at is None or item.heartbeat_at < cutoff or _worker_is_dead(item.worker)]
    requeued = False
    for item in lost:
        ids = _ids(item)
        if item.attempts >= settings.STEP_MAX_ATTEMPTS:
            item_fail(item, message=f"worker lost {item.attempts} times (last {item.worker or 'unknown'}); giving up")
            continue
        if StepItem.objects.filter(pk=item.pk, status=StepStatus.RUNNING, attempts=item.attempts,
                                   worker=item.worker).update(status=StepStatus.PENDING, heartbeat_at=None,
                                                              worker="") == 1:
            requeued = True
            logs.emit(level="warning", message=f"item {item.index} of step {item.step.node_id}: worker "
                                               f"{item.worker or '?'} went silent; running it again",
                      event="item_takeover", item=item.index, attempt=item.attempts, **ids)
    return requeued


def _ids(item: StepItem) -> dict:
    step = item.step
    return dict(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component=str(step.component))


def item_run(item: StepItem) -> None:
    """Run a claimed item on its inputs and record the result."""
    step = item.step
    input_ids = [str(i) for i in (item.inputs or [])]
    by_id = {str(f.id): f for f in File.objects.filter(id__in=input_ids)} if input_ids else {}
    monitor = step_monitor()
    watch = monitor.watch(item, item.attempts)
    context = StepContext(step=step, attempt=item.attempts, parameters=(step.input_data or {}).get("parameters") or {},
                          inputs=[by_id[i] for i in input_ids if i in by_id], cancelled=watch.lost,
                          created_by_id=step.execution.created_by_id, item=item)
    started = time.monotonic()
    cpu_start = time.thread_time()
    cache_key = hit = None
    try:
        missing = [i for i in input_ids if i not in by_id]
        if missing:
            raise StepFailure(f"input files no longer exist: {', '.join(missing)}")
        cache_key = _cache_key(step, context)
        if cache_key is not None:
            from executions.engine import cache

            hit = cache.cache_lookup(cache_key)
            CACHE_LOOKUPS.labels(result="hit" if hit is not None else "miss").inc()
            if hit is not None:
                outputs = cache.cache_materialize(hit, context=context)
                metrics = {"cache": "hit", "decoded": 0, "images": len(outputs)}
            else:
                cache.cache_miss()
        if hit is None:
            result = get_runner(step.component).run(context)
            output_check(step.component, result)
            outputs = result.outputs
            metrics = dict(result.metrics)
            if result.data is not None:  # JSON results (one per input image for a map component)
                metrics["data"] = result.data
            if cache_key is not None:
                metrics["cache"] = "miss"
    except Exception as exc:  # classified below: transient -> later, anything else -> failed
        monitor.unwatch(watch)
        _discard(context)
        _item_error(item, exc, elapsed_ms=int((time.monotonic() - started) * 1000))
        return
    peak_rss = monitor.unwatch(watch)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    metrics["cpu_seconds"] = round(time.thread_time() - cpu_start + (0 if hit else result.child_cpu_seconds), 4)
    metrics["peak_memory_bytes"] = peak_rss
    output_ids = [str(f.id) for f in outputs]
    won, _, counts = item_statements.item_complete(
        item=item, now=timezone.now(), outputs=output_ids, metrics=metrics, execution_time_ms=elapsed_ms,
        lineage=context.lineage(outputs), reused_from=hit.item_id if hit else None, cached=hit is not None)
    ITEM_DURATION.labels(component=step.component.name, status="completed" if won else "discarded").observe(
        elapsed_ms / 1000)
    if not won:
        _discard(context)
        logs.emit(level="warning", message=f"item {item.index} of step {step.node_id}: result of attempt "
                                           f"{item.attempts} discarded (cancelled or taken over)",
                  event="item_result_discarded", item=item.index, **_ids(item))
        return
    if item.attempts > 1:
        _remove_stray_outputs(item, keep=set(output_ids))
    if cache_key is not None and hit is None and "data" not in metrics:
        # (an item with JSON results is not recorded: an entry keeps files, not results)
        from executions.engine import cache

        cache.cache_record(key=cache_key, item_id=item.pk, outputs=outputs, component=step.component)
    _progressed(item, counts)
    if counts.finished >= counts.total:
        step_items_finalize(step.pk)


def _remove_stray_outputs(item: StepItem, *, keep: set[str]) -> None:
    """Files an earlier, lost attempt of this item stored before its worker died."""
    from files.services import file_delete

    for stray in File.objects.filter(metadata__step_id=str(item.step_id), metadata__item=item.index).exclude(
            id__in=list(keep)):
        file_delete(file=stray)


def _cache_key(step: ComponentExecution, context: StepContext) -> str | None:
    if not (settings.STEP_CACHE_ENABLED and step.component.deterministic
            and (step.input_data or {}).get("use_cache", True)):
        return None
    from executions.engine import cache

    return cache.cache_key(component=step.component, parameters=context.parameters, inputs=context.inputs)


def _discard(context: StepContext) -> None:
    from files.services import file_delete

    for created in context.created_files:
        file_delete(file=created)


def _progressed(item: StepItem, counts: item_statements.ItemCounts) -> None:
    send_on_commit(signals.step_items_progressed, execution_id=item.execution_id, step_id=item.step_id,
                   node_id=item.step.node_id, items=counts.as_dict())


def _item_error(item: StepItem, exc: BaseException, *, elapsed_ms: int) -> None:
    """A transient error runs the item again later (within the retry budget); any other fails it."""
    cause = _describe(exc)
    if is_transient(exc):
        since = (item.metrics or {}).get("transient_since") or time.time()
        delay = _transient_retry_delay(elapsed=time.time() - since)
        if delay is not None:
            # Back to pending, this attempt not counted (it was not a lost worker), not before the pause.
            if StepItem.objects.filter(pk=item.pk, status=StepStatus.RUNNING, attempts=item.attempts).update(
                    status=StepStatus.PENDING, attempts=F("attempts") - 1, worker="", heartbeat_at=None,
                    not_before=timezone.now() + timedelta(seconds=delay),
                    metrics={**(item.metrics or {}), "transient_since": since}) == 1:
                logs.emit(level="warning", message=f"item {item.index} of step {item.step.node_id}: transient "
                                                   f"error, retrying in {delay:.1f}s: {cause}",
                          event="item_transient_error", item=item.index, **_ids(item))
                drains_send(item.execution_id, 1, countdown=delay)
            return
        service = unavailable_service(exc)
        what = f"{LABELS[service]} unavailable" if service else "transient errors"
        cause = (f"{what} for {time.time() - since:.0f}s (retry budget "
                 f"{settings.STEP_TRANSIENT_RETRY_BUDGET_SECONDS:g}s); gave up: {cause}")
    ITEM_DURATION.labels(component=item.step.component.name, status="failed").observe(elapsed_ms / 1000)
    item_fail(item, message=cause, execution_time_ms=elapsed_ms)


def _describe_inputs(item: StepItem) -> str:
    ids = [str(i) for i in (item.inputs or [])]
    names = {str(pk): name for pk, name in File.objects.filter(id__in=ids[:3]).values_list("id", "original_name")}
    shown = [f"{names.get(i) or '?'} ({i})" for i in ids[:3]]
    more = f" and {len(ids) - 3} more" if len(ids) > 3 else ""
    return (", ".join(shown) + more) if shown else "no inputs"


def item_fail(item: StepItem, *, message: str, execution_time_ms: int | None = None) -> bool:
    """Fail a running item (if its claim holds) and apply its run's on_item_error."""
    step = item.step
    policy = (step.input_data or {}).get("on_item_error") or settings.ON_ITEM_ERROR_DEFAULT
    described = f"{message} (item {item.index}, inputs {_describe_inputs(item)})"
    finalize: list = []
    with transaction.atomic():
        execution = lock_execution(item.execution_id)
        won = StepItem.objects.filter(pk=item.pk, status=StepStatus.RUNNING, attempts=item.attempts).update(
            status=StepStatus.FAILED, error_message=message[:10000], completed_at=timezone.now(),
            execution_time_ms=execution_time_ms) == 1
        if won:
            ComponentExecution.objects.filter(pk=step.pk).update(items_failed=F("items_failed") + 1)
            counts = ComponentExecution.objects.values_list(
                "item_count", "items_completed", "items_failed", "items_skipped", "items_cached").get(pk=step.pk)
            # (registered first: the counts go out before the step's or the run's end they cause)
            _progressed(item, item_statements.ItemCounts(counts[0] or 0, *counts[1:]))
            if policy == "continue":
                finalize = [step.pk, *_skip_followers(step, item.index)]
            else:
                _fail_step(step, described, execution)
    if not won:
        logs.emit(level="warning", message=f"item {item.index} of step {step.node_id}: failure of attempt "
                                           f"{item.attempts} discarded (cancelled or taken over): {message}",
                  event="item_result_discarded", item=item.index, **_ids(item))
        return False
    logs.emit(level="error", message=f"step {step.node_id} item failed: {described}", event="item_failed", item=item.index,
              policy=policy, **_ids(item))
    for step_id in finalize:
        step_items_finalize(step_id)
    return True


def _skip_followers(step: ComponentExecution, index: int) -> list:
    """`continue`: the items of the same index of the steps streaming from `step` (and from
    those) are skipped. Returns the ids of the steps whose counts moved."""
    streams = streams_by_parent(steps_graph(step.execution_id))
    moved, queue = [], list(streams.get(step.node_id, []))
    while queue:
        follower = queue.pop(0)
        if StepItem.objects.filter(step_id=follower.pk, index=index, status=StepStatus.PENDING).update(
                status=StepStatus.SKIPPED, completed_at=timezone.now(),
                error_message=f"skipped: item {index} of step {step.node_id} failed") == 1:
            ComponentExecution.objects.filter(pk=follower.pk).update(items_skipped=F("items_skipped") + 1)
            moved.append(follower.pk)
            queue.extend(streams.get(follower.node_id, []))
    return moved


def _fail_step(step: ComponentExecution, message: str, execution) -> None:
    """`fail` (with the run's row locked): the step fails, its other items and every item and step
    after it are cancelled or skipped, and the run finishes as failed once nothing else runs."""
    now = timezone.now()
    after = descendants(step, steps_graph(step.execution_id))
    StepItem.objects.filter(step_id__in=[step.pk, *[s.pk for s in after]],
                            status__in=[StepStatus.PENDING, StepStatus.RUNNING]).update(
        status=StepStatus.CANCELLED, completed_at=now, error_message=f"cancelled: step {step.node_id} failed")
    own = ComponentExecution.objects.only("id", "execution_id", "node_id", "status").get(pk=step.pk)
    if own.status == StepStatus.RUNNING:
        step_transition(step=own, expected=StepStatus.RUNNING, to=StepStatus.FAILED, attempt=1, log=False,
                        error_message=message[:10000], completed_at=now)
    for later in after:
        if later.status == StepStatus.PENDING:
            step_transition(step=later, expected=StepStatus.PENDING, to=StepStatus.SKIPPED, completed_at=now,
                            error_message=f"skipped: upstream step {step.node_id} failed")
        elif later.status == StepStatus.RUNNING:
            step_transition(step=later, expected=StepStatus.RUNNING, to=StepStatus.CANCELLED, completed_at=now,
                            error_message=f"cancelled: upstream step {step.node_id} failed")
    if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
        finish_if_done(execution)


def step_items_finalize(step_id) -> None:
    """Finish an itemized step whose items have all finished: completed with the completed items'
    outputs in order (then as any step: children, the run's end), failed when every item failed,
    skipped when every item was skipped."""
    with transaction.atomic():
        execution_id = ComponentExecution.objects.values_list("execution_id", flat=True).get(pk=step_id)
        execution = lock_execution(execution_id)
        step = ComponentExecution.objects.select_for_update(no_key=True).select_related("component").get(pk=step_id)
        if (step.status not in {StepStatus.PENDING, StepStatus.RUNNING} or step.item_count is None
                or step.items_completed + step.items_failed + step.items_skipped < step.item_count):
            return
        now = timezone.now()
        if step.items_completed == 0:
            if step.status == StepStatus.PENDING and not step.items_failed:
                step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.SKIPPED, completed_at=now,
                                error_message="skipped: every item was skipped")
            else:
                if step.status == StepStatus.PENDING:
                    step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.RUNNING, log=False,
                                    attempts=1, started_at=now)
                    step.attempts = 1
                first = StepItem.objects.filter(step_id=step.pk, status=StepStatus.FAILED).order_by("index").first()
                reason = f"; first: item {first.index}: {first.error_message}" if first else ""
                step_transition(step=step, expected=StepStatus.RUNNING, to=StepStatus.FAILED, attempt=step.attempts,
                                completed_at=now, error_message=f"every item failed ({step.items_failed} of "
                                                                f"{step.item_count}){reason}"[:10000])
            skip_descendants(step)
            if execution.status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}:
                finish_if_done(execution)
            return
        if step.status == StepStatus.PENDING:  # its items all came from a retry's reuse
            step_transition(step=step, expected=StepStatus.PENDING, to=StepStatus.RUNNING, log=False, attempts=1,
                            started_at=now)
            step.attempts, step.started_at = 1, now
    files: list[str] = []
    inputs: list[str] = []
    data: list = []
    cpu = 0.0
    peak = 0
    for status, item_inputs, item_outputs, metrics in StepItem.objects.filter(step_id=step.pk).order_by(
            "index").values_list("status", "inputs", "outputs", "metrics").iterator(chunk_size=2000):
        inputs.extend(item_inputs or [])
        if status == StepStatus.COMPLETED:
            metrics = metrics or {}
            files.extend(item_outputs or [])
            cpu += metrics.get("cpu_seconds", 0.0)
            peak = max(peak, metrics.get("peak_memory_bytes", 0))
            if "data" in metrics:  # a list per item (one entry per image) joins the step's list
                data.extend(metrics["data"] if isinstance(metrics["data"], list) else [metrics["data"]])
    step.input_data = {**(step.input_data or {}), "inputs": inputs}
    elapsed = int(((now - step.started_at).total_seconds() if step.started_at else 0) * 1000)
    output_data = {"files": files, "metrics": {
        "items": step.item_count, "items_failed": step.items_failed, "items_skipped": step.items_skipped,
        "items_cached": step.items_cached, "images": len(files)}}
    if data:
        output_data["data"] = data
    step_complete(step=step, attempt=step.attempts, execution_time_ms=elapsed, output_data=output_data,
                  resource_usage={"cpu_seconds": round(cpu, 4), "peak_memory_bytes": peak,
                                  "memory_scope": "worker process (largest item)"})
