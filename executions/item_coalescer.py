"""Item progress, coalesced per run: a run of 100,000 items sends 100,000 `step_items_progressed`
signals, and its watchers (and its event history) must get a few events a second, not that.

`ItemProgressCoalescer` keeps, per run, the newest item counts of each step that it has not
published yet, and publishes them at most `rate` events a second per run in this process:

- a signal that finds the run's budget free is published at once (with any other step of the
  run still pending); otherwise it waits for the run's next slot, when a per-process flusher
  thread publishes whatever is pending then (the trailing flush: the last state is always
  published, at most 1 / rate seconds late);
- a step's last counts (every item finished) are published at once, whatever the budget;
- `flush(run)` publishes what is pending now: the progress publisher calls it before a step or
  run status event of the run, so item counts this process saw are out before that event (the
  step's completion, the run's end), never after it.

Each published event takes one slot (1 / rate seconds) of the run's budget, so several steps
moving at once share the rate. With rate 0 only the flushes and a step's last counts publish.
It does not read the database; `publish(run, [(step_id, node_id, items), ...])` does the rest.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

ITEM_COUNT_NAMES = ("total", "completed", "failed", "skipped", "cached")
IDLE_FORGET_SECONDS = 30.0

Pending = tuple[str, str, dict[str, int]]  # step id, node id, items


def items_done(items: dict[str, Any]) -> bool:
    """Every item of the step has finished (completed, failed or skipped)."""
    total = int(items.get("total") or 0)
    return total > 0 and sum(int(items.get(name) or 0) for name in ("completed", "failed", "skipped")) >= total


def dominated(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """`new` says nothing `old` did not: no counter is higher (the counters only grow, so of two
    readings of one step the later has every counter at least as high)."""
    return all(int(new.get(name) or 0) <= int(old.get(name) or 0) for name in ITEM_COUNT_NAMES)


@dataclass
class _Run:
    pending: dict[str, tuple[str, dict[str, int]]] = field(default_factory=dict)  # step id -> (node id, items)
    next_slot: float = 0.0  # monotonic time from which the next event may go out
    touched: float = 0.0
    publishing: threading.Lock = field(default_factory=threading.Lock)  # keeps one run's batches in order


class ItemProgressCoalescer:
    def __init__(self, *, publish: Callable[[str, list[Pending]], None], rate: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._publish = publish
        self._rate = rate
        self._clock = clock
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked pool process inherits neither the thread nor a sane lock.
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._runs: dict[str, _Run] = {}
        self._thread: threading.Thread | None = None
        self._pruned = 0.0

    def _prune(self, now: float) -> None:
        """Forget runs with nothing pending that moved no count for a while (the lock is held)."""
        self._pruned = now
        for run_id in [run_id for run_id, run in self._runs.items()
                       if not run.pending and now - run.touched > IDLE_FORGET_SECONDS]:
            del self._runs[run_id]

    def _interval(self) -> float:
        rate = float(self._rate() or 0)
        return 1.0 / rate if rate > 0 else float("inf")

    def add(self, *, execution_id, step_id, node_id: str, items: dict[str, int]) -> None:
        run_id, step = str(execution_id), str(step_id)
        items = {name: int(items.get(name) or 0) for name in ITEM_COUNT_NAMES}
        with self._lock:
            now = self._clock()
            if now - self._pruned > IDLE_FORGET_SECONDS:
                self._prune(now)  # runs that ended in another process (this one never saw the end)
            run = self._runs.setdefault(run_id, _Run())
            run.touched = now
            kept = run.pending.get(step)
            if kept is not None and dominated(items, kept[1]):
                return  # a reading older than the one waiting (two threads of one process)
            run.pending[step] = (node_id, items)
            due = items_done(items) or (self._interval() != float("inf") and now >= run.next_slot)
            if not due:
                self._ensure_thread()
                self._wake.notify()
                return
        self._flush_run(run_id, run)

    def knows(self, execution_id) -> bool:
        """Whether this process holds (or held) item counts of the run: a run of plain steps has none."""
        with self._lock:
            return str(execution_id) in self._runs

    def flush(self, execution_id) -> None:
        """Publish what is pending for the run now (before one of its status events)."""
        with self._lock:
            run = self._runs.get(str(execution_id))
        if run is not None:
            self._flush_run(str(execution_id), run)

    def forget(self, execution_id) -> None:
        """The run has ended: publish what is pending and drop its state."""
        self.flush(execution_id)
        with self._lock:
            self._runs.pop(str(execution_id), None)

    def flush_all(self) -> None:
        with self._lock:
            runs = list(self._runs.items())
        for run_id, run in runs:
            self._flush_run(run_id, run)

    def _flush_run(self, run_id: str, run: _Run) -> None:
        with run.publishing:
            with self._lock:
                if not run.pending:
                    return
                batch = [(step, node_id, items) for step, (node_id, items) in run.pending.items()]
                run.pending.clear()
                now = self._clock()
                interval = self._interval()
                if interval != float("inf"):
                    run.next_slot = max(now, run.next_slot) + len(batch) * interval
                run.touched = now
            try:
                self._publish(run_id, batch)
            except Exception:
                logger.exception("could not publish the item progress of execution %s", run_id)

    # --- the trailing flush -------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="item-progress-flusher", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                timed = self._interval() != float("inf")  # rate 0: nothing waits for a slot
                due = [(run_id, run) for run_id, run in self._runs.items()
                       if timed and run.pending and run.next_slot <= now]
                if not due:
                    self._prune(now)
                    waits = [run.next_slot - now for run in self._runs.values() if timed and run.pending]
                    self._wake.wait(timeout=min(waits) if waits else (IDLE_FORGET_SECONDS if self._runs else None))
                    continue
            for run_id, run in due:
                self._flush_run(run_id, run)
