"""The step monitor: one thread per worker process that keeps the claims of its running steps
alive (heartbeats), samples the process's memory for their peak, and tells a runner when its step
is no longer ours (cancelled, taken over), so it can stop early."""

from __future__ import annotations

import logging
import os
import threading
import time

import psutil
from django.conf import settings
from django.db import connection
from django.utils import timezone

from executions.models import ComponentExecution, StepItem, StepStatus

logger = logging.getLogger(__name__)


class Watch:
    """One running step (or item of a step) as the process's step monitor sees it."""

    def __init__(self, model, step_pk, attempt: int, rss: int) -> None:
        self.model, self.step_pk, self.attempt = model, step_pk, attempt
        self.lost = threading.Event()  # the step is no longer ours (cancelled, taken over)
        self.peak_rss = rss
        self.next_beat = time.monotonic() + settings.STEP_HEARTBEAT_SECONDS
        self.stopped = False  # set by unwatch: no heartbeat is written for it any more


class StepMonitor(threading.Thread):
    """One thread per worker process (started with its first step) that keeps the claims of the
    running steps alive (heartbeat_at every STEP_HEARTBEAT_SECONDS), samples the process's memory
    for their peak, and notices when a step is no longer ours so its runner can stop early. A
    thread per step would cost a thread start and join on every step."""

    SAMPLE_SECONDS = 0.05

    def __init__(self) -> None:
        super().__init__(daemon=True, name="step-monitor")
        self.process = psutil.Process()
        self.watches: set[Watch] = set()
        self.lock = threading.Lock()
        self.busy = threading.Event()

    def watch(self, step: ComponentExecution | StepItem, attempt: int) -> Watch:
        """Keep the claim of a running step, or of a running item (a StepItem), alive."""
        watch = Watch(type(step), step.pk, attempt, self.process.memory_info().rss)
        with self.lock:
            self.watches.add(watch)
        self.busy.set()
        return watch

    def unwatch(self, watch: Watch) -> int:
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
                alive = watch.model.objects.filter(
                    pk=watch.step_pk, status=StepStatus.RUNNING, attempts=watch.attempt,
                ).update(heartbeat_at=timezone.now())
                if not alive:
                    watch.lost.set()


_monitor_lock = threading.Lock()
_monitors: dict[int, StepMonitor] = {}


def step_monitor() -> StepMonitor:
    """This process's monitor (a forked pool process starts its own)."""
    pid = os.getpid()
    monitor = _monitors.get(pid)
    if monitor is None or not monitor.is_alive():
        with _monitor_lock:
            monitor = _monitors.get(pid)
            if monitor is None or not monitor.is_alive():
                monitor = _monitors[pid] = StepMonitor()
                monitor.start()
    return monitor
