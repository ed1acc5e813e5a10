"""A real Celery worker's metrics exporter (WORKER_METRICS_PORT, imageflow/metrics.py), scraped
over HTTP while the worker runs steps in its pool processes (prometheus-client multiprocess
mode: the main process's exporter sums what the pool processes wrote)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from django.conf import settings as django_settings

from executions.models import ComponentExecution, ExecutionStatus, StepStatus
from executions.services import execution_start
from tests.deploy.test_metrics import TOKEN, value
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    ProcessWorker,
    _purge_queue,
    builtins,
    engine_settings,
    jpeg_file,
    node,
    pipeline_of,
    wait_finished,
)

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def metrics_worker(transactional_db, engine_settings, tmp_path):
    """A 2-process worker with its exporter on a free port and a multiprocess directory of its own."""
    port = _free_port()
    multiprocess_dir = tmp_path / "prometheus"
    multiprocess_dir.mkdir()
    _purge_queue()
    worker = ProcessWorker(extra_env={"WORKER_METRICS_PORT": str(port), "METRICS_TOKEN": TOKEN,
                                      "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir)})
    yield f"http://127.0.0.1:{port}/metrics"
    worker.stop()
    _purge_queue()


def scrape(url: str, *, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def step_count(text: str, component: str, status: str) -> float:
    name = "imageflow_step_duration_seconds_count"
    labels = f'{{component="{component}",status="{status}"}}'
    return value(text, name, component=component, status=status) if f"{name}{labels}" in text else 0.0


def test_a_workers_exporter_counts_exactly_the_steps_its_pool_ran(metrics_worker, builtins, pipeline_of, jpeg_file,
                                                                   user):
    # given a worker with its exporter on, which refuses a scrape without the token
    assert scrape(metrics_worker, token=None)[0] == 401
    assert scrape(metrics_worker, token="wrong")[0] == 401
    status, before = scrape(metrics_worker)
    assert status == 200
    # when three runs of resize -> grayscale finish on it
    pipeline = pipeline_of([node("fit", "resize", width=64), node("gray", "grayscale")], [{"from": "fit", "to": "gray"}])
    runs = [wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)) for _ in range(3)]
    assert [run.status for run in runs] == [ExecutionStatus.COMPLETED] * 3
    status, after = scrape(metrics_worker)
    assert status == 200
    # then the step histogram grew by exactly the steps run, per component, with their recorded durations
    steps = ComponentExecution.objects.filter(execution__in=runs)
    for component in ("resize", "grayscale"):
        done = steps.filter(component__name=component, status=StepStatus.COMPLETED)
        assert done.count() == 3
        assert step_count(after, component, "completed") - step_count(before, component, "completed") == 3
        recorded = sum(step.execution_time_ms for step in done) / 1000
        grown = (value(after, "imageflow_step_duration_seconds_sum", component=component, status="completed")
                 - (value(before, "imageflow_step_duration_seconds_sum", component=component, status="completed")
                    if step_count(before, component, "completed") else 0.0))
        assert grown == pytest.approx(recorded, abs=1e-6)
        assert step_count(after, component, "failed") == step_count(before, component, "failed")
    # and the scrape-time values are those of the database and the broker now: nothing running or waiting
    assert value(after, "imageflow_runs", status="running") == 0
    assert value(after, "imageflow_steps", status="pending") == 0
    assert value(after, "imageflow_queue_length", queue=django_settings.CELERY_TASK_DEFAULT_QUEUE) == 0
    assert value(after, "imageflow_runs_started_last_hour", status="completed") == 3
