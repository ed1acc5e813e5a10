"""Shared parts of the engine benchmarks: Django on the benchmark database, a real Celery worker
(and beat) process stopped on exit, and what the items benchmarks read back and clean up."""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


def bench_isolation(*, database: str, prefix: str = "imageflow-bench-v2") -> None:
    """Before Django is set up: the benchmark's own database, Celery queue, cache keys and channel
    prefix (unless the environment names others), so it never takes another session's tasks."""
    os.environ.setdefault("DATABASE_NAME", database)
    os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", prefix)
    os.environ.setdefault("CACHE_KEY_PREFIX", prefix)
    os.environ.setdefault("CHANNEL_LAYER_PREFIX", prefix)
    os.environ.setdefault("DEBUG", "0")


def django_setup(*, prepare: bool = False) -> None:
    """Django on DATABASE_NAME; `prepare`: create that database if missing, migrate it and
    register the built-in components first."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
    os.environ.setdefault("DATABASE_NAME", "imageflow_engine")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if prepare:
        from _setup import ensure_database

        ensure_database()
    import django

    django.setup()
    if prepare:
        from django.core.management import call_command

        from executions.catalogue import builtin_components_register

        call_command("migrate", verbosity=0)
        builtin_components_register()


def items_available() -> bool:
    """Whether the engine runs map steps as items (issue #13: executions/engine/items.py)."""
    return importlib.util.find_spec("executions.engine.items") is not None


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


class Worker:
    """`celery -A imageflow worker` with the benchmark's no-op task module included. It runs at
    the priority of this process (WORKER_NICENESS 0 unless `extra_env` says), as the baselines
    measured here do: the deployed niceness 10 would only hand the cores to other sessions."""

    def __init__(self, *, concurrency: int, extra_env: dict | None = None) -> None:
        from django.conf import settings

        self.name = f"engine-bench-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = ROOT / "var" / "log" / "engine-bench-worker.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "LOG_LEVEL": "WARNING", "CELERY_DB_REUSE_MAX": "1000", "WORKER_NICENESS": "0",
               # as deployed: no per-query debug bookkeeping
               "DEBUG": "0", **(extra_env or {})}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "imageflow", "worker", "--pool=prefork",
             f"--concurrency={concurrency}", "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", self.name,
             "--include", "engine_bench_tasks", "--loglevel=WARNING", "--without-mingle", "--without-gossip"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)
        self._wait_ready()

    def _wait_ready(self) -> None:
        from imageflow.celery import app

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"worker exited: {self.log_path.read_text()[-2000:]}")
            replies = app.control.ping(timeout=0.5)
            if any(self.name.split("@")[0] in name for reply in replies for name in reply):
                return
        raise SystemExit("worker did not start")

    def processes(self) -> list:
        import psutil

        try:
            main = psutil.Process(self.process.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and its pool processes so far."""
        import psutil

        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def peak_rss_mb(self) -> dict[str, float]:
        """The high-water mark of resident memory (VmHWM) of the main process and of each pool
        process, since each started."""
        peaks = {}
        for index, proc in enumerate(self.processes()):
            peak = peak_rss_mb(proc.pid)
            if peak is not None:
                peaks["main" if index == 0 else f"pool {index}"] = peak
        return peaks

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


class Beat:
    """`celery -A imageflow beat` on the benchmark's queue (sweep, log shipping, dashboard, cache
    eviction), its schedule and pid files in a temporary directory."""

    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="engine-bench-beat-")
        self.log = (ROOT / "var" / "log" / "engine-bench-beat.log").open("wb")
        env = {**os.environ, "LOG_LEVEL": "WARNING", "DEBUG": "0"}
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "celery"), "-A", "imageflow", "beat", "--loglevel=WARNING",
             f"--schedule={self.directory.name}/schedule", f"--pidfile={self.directory.name}/beat.pid"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        atexit.register(self.stop)

    def peak_rss_mb(self) -> float | None:
        return peak_rss_mb(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()
        self.directory.cleanup()


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a process (Linux): its largest resident set since it started, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def purge_queue() -> None:
    from django.conf import settings

    from imageflow.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def queue_length() -> int:
    """Messages waiting in the benchmark's queue (not those a worker process holds)."""
    from django.conf import settings

    from imageflow.celery import app

    with app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=settings.CELERY_TASK_DEFAULT_QUEUE,
                                                      passive=True).message_count
        except Exception:  # the Redis transport answers "no such queue" for an empty one
            return 0


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="engine-bench", defaults={"is_staff": True})
    return user


def wait_runs(run_ids: list, *, timeout: float, poll: float = 0.05) -> bool:
    """Wait until every run is finished (completed, failed or cancelled); False on timeout."""
    from executions.models import FINISHED_EXECUTION_STATUSES, PipelineExecution

    deadline = time.monotonic() + timeout
    while PipelineExecution.objects.filter(pk__in=run_ids).exclude(status__in=FINISHED_EXECUTION_STATUSES).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def cancel_unfinished(run_ids: list) -> int:
    """Cancel the runs of a benchmark that ran out of time (so no worker goes on with them)."""
    from executions.models import FINISHED_EXECUTION_STATUSES, PipelineExecution
    from executions.services import execution_cancel

    cancelled = 0
    for execution in PipelineExecution.objects.filter(pk__in=run_ids).exclude(status__in=FINISHED_EXECUTION_STATUSES):
        try:
            execution_cancel(execution=execution)
            cancelled += 1
        except Exception as exc:  # finished meanwhile
            print(f"  (could not cancel run {execution.pk}: {exc})")
    return cancelled


def item_figures(run_id) -> dict:
    """What a run's items recorded, per step (node id) and in all: items, by status, the first
    start and the first and last completion, the decodes the runner reported (metrics->decoded),
    how many items reported any, and the summed execution time; plus the steps' own counters."""
    from django.db import connection

    steps: dict[str, dict] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT s.node_id, s.item_count, s.items_completed, s.items_failed, s.items_skipped, s.items_cached,
                      count(i.id), count(i.id) FILTER (WHERE i.status = 'completed'),
                      min(i.started_at), min(i.completed_at), max(i.completed_at),
                      coalesce(sum((i.metrics->>'decoded')::bigint), 0),
                      count(i.id) FILTER (WHERE i.metrics ? 'decoded'),
                      coalesce(sum(i.execution_time_ms), 0), s.started_at, s.completed_at
                 FROM component_executions s LEFT JOIN step_items i ON i.step_id = s.id
                WHERE s.execution_id = %s
                GROUP BY s.id ORDER BY min(s.created_at), s.node_id""", [str(run_id)])
        for row in cursor.fetchall():
            steps[row[0]] = dict(
                item_count=row[1], items_completed=row[2], items_failed=row[3], items_skipped=row[4],
                items_cached=row[5], items=row[6], completed=row[7], first_started=row[8], first_completed=row[9],
                last_completed=row[10], decoded=row[11], reporting_decoded=row[12], execution_ms=row[13],
                step_started=row[14], step_completed=row[15])
    total = {key: sum(step[key] or 0 for step in steps.values())
             for key in ("items", "completed", "decoded", "reporting_decoded", "items_cached", "items_failed",
                         "items_skipped", "execution_ms")}
    starts = [step["first_started"] for step in steps.values() if step["first_started"]]
    total["first_started"] = min(starts) if starts else None
    return {"steps": steps, "total": total}


def runs_delete(run_ids: list) -> None:
    """Delete runs with their steps, items, lineage, log records and the step-cache entries their
    items made (the outputs are files: files_delete)."""
    from executions import models

    for start in range(0, len(run_ids), 500):
        chunk = run_ids[start:start + 500]
        if hasattr(models, "StepCacheEntry"):
            models.StepCacheEntry.objects.filter(item__execution_id__in=chunk).delete()
        models.PipelineExecution.objects.filter(pk__in=chunk).delete()


def sources_create(*, count: int, user, width: int = 1024, height: int = 768, unique: bool = False,
                   tag: str = "bench") -> list:
    """`count` generated JPEGs stored as uploads (their thumbnail requests go to the benchmark's
    queue: purge it before a worker starts). `unique`: a block of random pixels in each, so no
    earlier run (nor the step cache) has seen these images."""
    import io
    import random

    from PIL import Image

    from executions.demo import demo_image_bytes
    from files.services import file_store_bytes

    rng = random.Random()
    files = []
    for index in range(count):
        content = demo_image_bytes(width=width, height=height, seed=index)
        if unique:
            image = Image.open(io.BytesIO(content))
            block = Image.frombytes("RGB", (24, 24), rng.randbytes(24 * 24 * 3))
            image.paste(block, (rng.randrange(width - 24), rng.randrange(height - 24)))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            content = buffer.getvalue()
        files.append(file_store_bytes(content=content, original_name=f"{tag}-{index:05d}.jpg", created_by=user,
                                      prefix="uploads", extra_metadata={"bench": tag}))
    return files


def files_delete(file_ids: list, *, objects: bool = True) -> tuple[int, int]:
    """Delete file rows and (unless `objects` is off: rows made without objects) their objects and
    recorded thumbnails, in batches of 1,000 keys. Returns (rows, objects) deleted."""
    from django.core.files.storage import default_storage

    from files.models import File

    rows = removed = 0
    bucket = getattr(default_storage, "bucket", None)
    for start in range(0, len(file_ids), 1000):
        batch = File.objects.filter(pk__in=file_ids[start:start + 1000])
        keys: set[str] = set()
        if objects:
            for path, thumbnails in batch.values_list("storage_path", "thumbnails"):
                keys.add(path)
                for entry in (thumbnails or {}).values():
                    if isinstance(entry, dict) and entry.get("key"):
                        keys.add(entry["key"])
        rows += batch.count()
        batch.delete()
        if keys and bucket is not None:
            ordered = sorted(keys)
            for chunk in range(0, len(ordered), 1000):
                bucket.delete_objects(Delete={"Objects": [{"Key": k} for k in ordered[chunk:chunk + 1000]],
                                              "Quiet": True})
            removed += len(keys)
    return rows, removed


def run_output_file_ids(run_ids: list) -> list:
    """Files the runs' steps made: the rows tagged with a run's id (store_output writes it into
    their metadata) and the outputs the runs' items recorded (a cache hit's new rows among them).
    Not for passthrough runs: their outputs are their inputs."""
    from django.db import connection

    from files.models import File

    ids: set = set()
    for run_id in run_ids:
        ids.update(File.objects.filter(metadata__execution_id=str(run_id)).values_list("id", flat=True))
    if run_ids:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT jsonb_array_elements_text(outputs) FROM step_items "
                           "WHERE execution_id = ANY(%s::uuid[]) AND jsonb_typeof(outputs) = 'array'",
                           [[str(r) for r in run_ids]])
            ids.update(uuid.UUID(row[0]) for row in cursor.fetchall())
    return list(ids)
