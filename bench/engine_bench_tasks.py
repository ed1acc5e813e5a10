"""Included into the benchmark's worker: the bare Celery task the overhead benchmark chains, and,
with ENGINE_BENCH_NO_PROGRESS=1, the live-progress receivers disconnected (to attribute the
engine's per-step time: its own bookkeeping vs progress publishing)."""

import os

from celery import shared_task


@shared_task(name="engine_bench.noop")
def noop(*args, **kwargs) -> None:
    return None


if os.environ.get("ENGINE_BENCH_NO_PROGRESS") == "1":
    from executions import signals

    signals.execution_status_changed.disconnect(dispatch_uid="executions.events.on_execution_status_changed")
    signals.step_status_changed.disconnect(dispatch_uid="executions.events.on_step_status_changed")
