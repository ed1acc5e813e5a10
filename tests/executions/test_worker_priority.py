"""A Celery worker yields the CPU to web processes on the cores they share (WORKER_NICENESS)."""

from __future__ import annotations

import os

import psutil
import pytest

from .conftest import ProcessWorker, _purge_queue

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _niceness_of(worker: ProcessWorker) -> tuple[int, set[int]]:
    return psutil.Process(worker.process.pid).nice(), {psutil.Process(pid).nice() for pid in worker.child_pids()}


@pytest.mark.parametrize("niceness", [7, 0])
def test_the_worker_and_its_pool_processes_run_at_the_configured_lower_priority(engine_settings, niceness):
    # given the niceness this test runs at
    base = os.nice(0)
    _purge_queue()
    # when a worker starts with WORKER_NICENESS
    worker = ProcessWorker(extra_env={"WORKER_NICENESS": str(niceness)})
    try:
        main, pool = _niceness_of(worker)
    finally:
        worker.stop()
        _purge_queue()
    # then the main process and both pool processes (forked after worker_init) run that much lower
    assert main == min(base + niceness, 19)
    assert pool == {min(base + niceness, 19)}
