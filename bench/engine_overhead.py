"""Engine overhead: a pipeline of N no-op steps in a chain (built-in `passthrough`, no files)
versus a bare Celery chain of N no-op tasks on the same broker and the same worker, both measured
in this run. Prints the per-step time of each (median over the rounds) and their ratio.
Target: engine per-step <= 2x the bare chain's.

    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_overhead.py            # 20 steps, 15 rounds
    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_overhead.py --quick    # 3 rounds

Runs on DATABASE_NAME (default imageflow_engine, created and migrated if missing) and its own queue
(CELERY_TASK_DEFAULT_QUEUE, default imageflow-bench-v2).
"""

from __future__ import annotations

import argparse
import statistics
import time

from engine_common import Worker, bench_isolation, bench_user, django_setup, load_average, purge_queue, runs_delete

TARGET = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--no-attribution", action="store_true",
                        help="skip the extra engine run with the live-progress receivers disconnected")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    bench_isolation(database="imageflow_engine")
    django_setup(prepare=True)
    load_at_start = load_average()

    from celery import chain

    from engine_bench_tasks import noop
    from executions.log_models import ExecutionLogRecord
    from executions.logstore.tasks import ship_logs
    from executions.models import FINISHED_EXECUTION_STATUSES, PipelineExecution
    from executions.catalogue import builtin_components_register
    from executions.services import execution_start
    from registry.models import Pipeline

    builtin_components_register()
    user = bench_user()
    definition = {
        "nodes": [{"id": f"s{i}", "component": {"name": "passthrough", "version": "1.0.0"}, "parameters": {}}
                  for i in range(args.steps)],
        "edges": [{"from": f"s{i}", "to": f"s{i + 1}"} for i in range(args.steps - 1)],
    }
    pipeline, _ = Pipeline.objects.update_or_create(name=f"bench-noop-chain-{args.steps}", created_by=user,
                                                    defaults={"definition": definition})
    purge_queue()
    runs: list = []  # deleted at the end, with their steps, items and log records
    first_step: list[float] = []  # run created -> its first step running, per engine round
    worker = Worker(concurrency=1)

    def engine_round() -> float:
        started = time.perf_counter()
        execution = execution_start(pipeline=pipeline, inputs=[], user=user)
        runs.append(execution.pk)
        while True:
            status = PipelineExecution.objects.filter(pk=execution.pk).values_list("status", flat=True).get()
            if status in FINISHED_EXECUTION_STATUSES:
                break
            time.sleep(0.01)
        assert status == "completed", status
        elapsed = (time.perf_counter() - started) / args.steps
        created, first = (PipelineExecution.objects.filter(pk=execution.pk)
                          .values_list("created_at", "steps__started_at").order_by("steps__started_at").first())
        first_step.append((first - created).total_seconds())
        settle(execution.pk)
        return elapsed

    def settle(execution_id) -> None:
        """Ship the run's log lines on the worker now (a run's end asks for shipping at most once a
        second and this worker runs no beat), so that work is not counted in the next round."""
        ship_logs.delay()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and ExecutionLogRecord.objects.filter(
                execution_id=execution_id, shipped_at__isnull=True, ship_error__isnull=True).exists():
            time.sleep(0.01)
        time.sleep(0.05)

    def bare_round() -> float:
        started = time.perf_counter()
        chain(*[noop.si() for _ in range(args.steps)]).apply_async().get(timeout=120)
        return (time.perf_counter() - started) / args.steps

    try:
        engine_round(), bare_round()  # warm-up: connections, imports
        engine, bare = [], []
        for _ in range(rounds):
            bare.append(bare_round())
            engine.append(engine_round())
    finally:
        worker.stop()
    quiet = []
    if not args.no_attribution:
        worker = Worker(concurrency=1, extra_env={"ENGINE_BENCH_NO_PROGRESS": "1"})
        try:
            engine_round()
            quiet = [engine_round() for _ in range(rounds)]
        finally:
            worker.stop()
    purge_queue()
    runs_delete(runs)
    engine_ms, bare_ms = statistics.median(engine) * 1000, statistics.median(bare) * 1000
    print(f"chain of {args.steps} no-op steps, {rounds} rounds, 1 worker process; load average {load_at_start} at "
          f"the start, {load_average()} at the end")
    print(f"  bare Celery chain : {bare_ms:7.2f} ms per step (median; min {min(bare) * 1000:.2f})")
    print(f"  ImageFlow engine  : {engine_ms:7.2f} ms per step (median; min {min(engine) * 1000:.2f})")
    print(f"  ratio engine/bare : {engine_ms / bare_ms:5.2f}x   (target <= {TARGET}x)")
    print(f"  of which, run created -> first step running: {1000 * statistics.median(first_step):.1f} ms per run "
          f"(median; {1000 * statistics.median(first_step) / args.steps:.2f} ms per step)")
    if quiet:
        quiet_ms = statistics.median(quiet) * 1000
        print(f"  engine without the live-progress receivers: {quiet_ms:7.2f} ms per step "
              f"({quiet_ms / bare_ms:.2f}x bare; progress publishing = {engine_ms - quiet_ms:.2f} ms per step)")
    print(f"{'PASS' if engine_ms / bare_ms <= TARGET else 'MISS'}: engine per step {engine_ms / bare_ms:.2f}x the bare "
          f"Celery chain's (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
