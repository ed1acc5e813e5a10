"""Fixtures of the engine tests: built-in components, real images in the object store, and real
Celery workers on the real Redis broker (a worker thread in this process, or a separate
two-process worker), always stopped by their finalizers."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection
from PIL import Image, ImageDraw

from executions.catalogue import builtin_components_register
from executions.models import FINISHED_EXECUTION_STATUSES, PipelineExecution
from files.services import file_read_bytes, file_store_bytes
from registry.models import Component, ComponentRunner, Pipeline

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_STEP = Path(__file__).resolve().parent / "contract_step.py"
CONTAINER_TEMPLATE = f"{sys.executable} {CONTRACT_STEP} {{image}}"
FAST_ENGINE = {
    "STEP_HEARTBEAT_SECONDS": 0.2,
    "STEP_HEARTBEAT_TIMEOUT_SECONDS": 3.0,
    "STEP_RETRY_BACKOFF_SECONDS": 0.1,
    "CONTAINER_COMMAND_TEMPLATE": CONTAINER_TEMPLATE,
}


def ref(name: str, version: str = "1.0.0") -> dict:
    return {"name": name, "version": version}


def node(node_id: str, component: str, **parameters) -> dict:
    return {"id": node_id, "component": ref(component), "parameters": parameters}


def make_jpeg(width: int = 320, height: int = 240, color=(200, 60, 30)) -> bytes:
    image = Image.new("RGB", (width, height), color)
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width // 2, height // 2), fill=(20, 200, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def open_image(file) -> Image.Image:
    image = Image.open(io.BytesIO(file_read_bytes(file)))
    image.load()
    return image


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_finished(execution: PipelineExecution, timeout: float = 60.0) -> PipelineExecution:
    def finished():
        execution.refresh_from_db()
        return execution.status in FINISHED_EXECUTION_STATUSES

    wait_for(finished, timeout=timeout, what=f"execution {execution.pk} to finish")
    return execution


@pytest.fixture
def engine_settings(settings):
    for key, value in FAST_ENGINE.items():
        setattr(settings, key, value)
    return settings


@pytest.fixture
def builtins(db):
    builtin_components_register()


@pytest.fixture
def contract_component(db):
    return Component.objects.create(
        name="invert-external", version="1.0.0", docker_image="example/invert:1", runner=ComponentRunner.CONTAINER,
        input_schema={"type": "object", "additionalProperties": False, "properties": {
            "operation": {"type": "string", "enum": ["invert", "none"], "default": "invert"},
            "sleep_seconds": {"type": "number", "minimum": 0, "default": 0},
            "fail_unless_exists": {"type": "string"}, "tempfail_marker": {"type": "string"},
            "done_marker": {"type": "string"}, "allocate_mb": {"type": "integer", "minimum": 0},
            "metrics": {"type": "object"}, "data": {}, "report_env": {"type": "array", "items": {"type": "string"}}}},
    )


@pytest.fixture
def jpeg_file(user):
    def make(width: int = 320, height: int = 240, color=(200, 60, 30), owner=None):
        return file_store_bytes(content=make_jpeg(width, height, color), original_name=f"in-{width}x{height}.jpg",
                                created_by=owner or user, prefix="uploads")
    return make


@pytest.fixture
def pipeline_of(user):
    def make(nodes: list[dict], edges: list[dict] | None = None, owner=None) -> Pipeline:
        return Pipeline.objects.create(name=f"p-{uuid.uuid4().hex[:8]}", definition={"nodes": nodes, "edges": edges or []},
                                       created_by=owner or user)
    return make


def _purge_queue() -> None:
    from imageflow.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(django_settings.CELERY_TASK_DEFAULT_QUEUE)


@pytest.fixture
def thread_worker(transactional_db, engine_settings):
    """A real Celery worker (solo pool) in a thread of this process, on the real broker."""
    from celery.contrib.testing.worker import start_worker

    import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for the start-up check)
    from imageflow.celery import app

    _purge_queue()
    from executions.engine.runners.builtin import shutdown_image_pool

    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=True, shutdown_timeout=30,
                          queues=[django_settings.CELERY_TASK_DEFAULT_QUEUE]) as worker:
            yield worker
    finally:
        shutdown_image_pool()  # its threads' database connections must not outlive the test database


class ProcessWorker:
    """`celery -A imageflow worker --concurrency=2` as a separate process on the test database."""

    def __init__(self, *, concurrency: int = 2, extra_env: dict | None = None, extra_args: list[str] | None = None,
                 queues: list[str] | None = None) -> None:
        self.name = f"engine-test-{uuid.uuid4().hex[:8]}@%h"
        env = {**os.environ, "DATABASE_NAME": connection.settings_dict["NAME"], "CELERY_DB_REUSE_MAX": "1000",
               **{key: str(value) for key, value in FAST_ENGINE.items()}, **(extra_env or {})}
        self.log_path = ROOT / "var" / "log" / f"{self.name.split('@')[0]}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "imageflow", "worker", f"--concurrency={concurrency}",
             "--pool=prefork", "-Q", ",".join(queues or [django_settings.CELERY_TASK_DEFAULT_QUEUE]), "-n", self.name,
             "--loglevel=INFO", "--without-mingle", "--without-gossip", *(extra_args or [])],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("worker did not become ready")

    def child_pids(self) -> list[int]:
        import psutil

        return [child.pid for child in psutil.Process(self.process.pid).children()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown of the main process
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture
def process_worker(transactional_db, engine_settings):
    _purge_queue()
    worker = ProcessWorker()
    yield worker
    worker.stop()
    _purge_queue()


def run_here(step) -> None:
    """Run a step in this process, without a worker: its task's body, then, for a map step, the
    drain of its items (the messages the engine sends meanwhile wait in the test queue)."""
    from executions.engine.items import items_drain
    from executions.engine.lifecycle import step_execute

    step_execute(step_id=step.pk)
    items_drain(execution_id=step.execution_id)
