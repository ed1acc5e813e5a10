"""Shared parts of the engine benchmarks: Django on the benchmark database and a real Celery
worker process (stopped on exit)."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imageflow.settings")
    os.environ.setdefault("DATABASE_NAME", "imageflow_engine")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


class Worker:
    """`celery -A imageflow worker` with the benchmark's no-op task module included."""

    def __init__(self, *, concurrency: int, extra_env: dict | None = None) -> None:
        from django.conf import settings

        self.name = f"engine-bench-{uuid.uuid4().hex[:6]}@%h"
        self.log_path = ROOT / "var" / "log" / "engine-bench-worker.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": f"{BENCH}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "LOG_LEVEL": "WARNING", "CELERY_DB_REUSE_MAX": "1000",
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

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and its pool processes so far."""
        import psutil

        total = 0.0
        main = psutil.Process(self.process.pid)
        for proc in [main, *main.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def purge_queue() -> None:
    from django.conf import settings

    from imageflow.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(settings.CELERY_TASK_DEFAULT_QUEUE)


def bench_user():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="engine-bench", defaults={"is_staff": True})
    return user
