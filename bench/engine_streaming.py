"""Streaming: ONE run of a 3-step map chain (resize -> grayscale -> blur) over 1,000 images
(generated 320x240 JPEGs by default), 2 worker processes. Along map -> map edges item i of a step
is ready as soon as item i of its parent is done (issue #13), so the first final outputs exist
long before the run ends.

Prints, from the run request (t = 0):
  the first final output: the earliest completed_at of the last step's items, and the created_at
      of the last step's first output File;
  the run's duration (request -> run completed_at);
  the baseline, from the same run: the time the first step's last item finished, which is the
      earliest a first final output could exist if streaming were impossible (a step starting only
      after its parent step completed);
and each as a share of the run's duration. With --step-level-baseline, also the same images run
once more with STEP_ITEMS_ENABLED off at the run's start (each step one task over all its inputs,
as before items): when its first final output existed.

Target: first final output before 15% of the run's duration.

    .venv/bin/python bench/engine_streaming.py                 # 1,000 images
    .venv/bin/python bench/engine_streaming.py --images 200    # quicker
    .venv/bin/python bench/engine_streaming.py --step-level-baseline

The step cache is off in the worker (STEP_CACHE_ENABLED=0: the generated images repeat from one
invocation to the next). Runs on DATABASE_NAME (default imageflow_bench_v2, created and migrated if
missing) and its own queue; the runs, their outputs and the sources are deleted at the end.
"""

from __future__ import annotations

import argparse
import time

from engine_common import (
    Worker, bench_isolation, bench_user, cancel_unfinished, django_setup, files_delete, item_figures,
    items_available, load_average, purge_queue, run_output_file_ids, runs_delete, sources_create, wait_runs,
)

TARGET_SHARE = 0.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--item-batch", type=int, default=None, help="STEP_ITEM_BATCH of the worker (default: setting)")
    parser.add_argument("--run-timeout", type=float, default=900)
    parser.add_argument("--step-level-baseline", action="store_true",
                        help="also run the same images with STEP_ITEMS_ENABLED off (each step one task over all its "
                             "inputs, as before items: streaming impossible) and print when its first final output "
                             "existed")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    bench_isolation(database="imageflow_bench_v2")
    django_setup(prepare=True)

    from django.conf import settings
    from django.utils import timezone

    from executions.models import ComponentExecution, PipelineExecution
    from executions.services import execution_start
    from files.models import File
    from registry.models import Pipeline

    if not items_available():
        raise SystemExit("the items engine (issue #13) is not here: no streaming to measure")
    load_at_start = load_average()
    user = bench_user()
    ref = lambda name: {"name": name, "version": "1.0.0"}  # noqa: E731
    definition = {"nodes": [{"id": "resize", "component": ref("resize"), "parameters": {"width": width // 2}},
                            {"id": "gray", "component": ref("grayscale"), "parameters": {}},
                            {"id": "blur", "component": ref("blur"), "parameters": {"radius": 2}}],
                  "edges": [{"from": "resize", "to": "gray"}, {"from": "gray", "to": "blur"}]}
    pipeline, _ = Pipeline.objects.update_or_create(name="bench-streaming-chain", created_by=user,
                                                    defaults={"definition": definition})
    print(f"preparing {args.images} {width}x{height} JPEGs in the object store ...", flush=True)
    started = time.perf_counter()
    sources = sources_create(count=args.images + 1, user=user, width=width, height=height, tag="bench-stream")
    print(f"  {time.perf_counter() - started:.1f} s", flush=True)
    runs: list = []
    worker = None
    try:
        purge_queue()  # the sources' thumbnail requests
        extra = {"STEP_CACHE_ENABLED": "0", **({"STEP_ITEM_BATCH": str(args.item_batch)} if args.item_batch else {})}
        worker = Worker(concurrency=args.workers, extra_env=extra)
        warm = execution_start(pipeline=pipeline, inputs=[sources[-1].id], user=user).pk
        runs.append(warm)
        wait_runs([warm], timeout=120)

        requested = timezone.now()
        run_id = execution_start(pipeline=pipeline, inputs=[s.id for s in sources[:-1]], user=user).pk
        runs.append(run_id)
        finished = wait_runs([run_id], timeout=args.run_timeout, poll=0.1)
        if not finished:
            cancel_unfinished([run_id])
        step_level = None
        if args.step_level_baseline:
            from django.test import override_settings

            with override_settings(STEP_ITEMS_ENABLED=False):  # the run's start decides
                baseline_requested = timezone.now()
                baseline_id = execution_start(pipeline=pipeline, inputs=[s.id for s in sources[:-1]], user=user).pk
            runs.append(baseline_id)
            baseline_finished = wait_runs([baseline_id], timeout=args.run_timeout, poll=0.1)
            if not baseline_finished:
                cancel_unfinished([baseline_id])
            baseline_run = PipelineExecution.objects.get(pk=baseline_id)
            baseline_last = ComponentExecution.objects.get(execution_id=baseline_id, node_id="blur")
            baseline_first = (File.objects.filter(metadata__execution_id=str(baseline_id),
                                                  metadata__step_id=str(baseline_last.pk))
                              .order_by("created_at").values_list("created_at", flat=True).first())
            step_level = {
                "status": baseline_run.status, "finished": baseline_finished,
                "duration": ((baseline_run.completed_at or timezone.now()) - baseline_requested).total_seconds(),
                "first_output": (baseline_first - baseline_requested).total_seconds() if baseline_first else None}
        worker.stop()
        run = PipelineExecution.objects.get(pk=run_id)
        figures = item_figures(run_id)["steps"]
        last_step = ComponentExecution.objects.get(execution_id=run_id, node_id="blur")
        first_file = (File.objects.filter(metadata__execution_id=str(run_id), metadata__step_id=str(last_step.pk))
                      .order_by("created_at").values_list("created_at", flat=True).first())

        def since(moment) -> float | None:
            return None if moment is None else (moment - requested).total_seconds()

        duration = since(run.completed_at or timezone.now())
        first_item = since(figures["blur"]["first_completed"])
        first_output = since(first_file)
        first_step_done = since(figures["resize"]["last_completed"])
        batch = args.item_batch or settings.STEP_ITEM_BATCH

        def share(seconds: float | None) -> str:
            return "-" if seconds is None else f"{seconds:7.2f} s  {seconds / duration:6.1%} of the run"

        print(f"{args.images} x {width}x{height} JPEG, resize({width // 2}) -> grayscale -> blur(2) as one run, "
              f"{args.workers} worker processes, items of {batch}; load average {load_at_start} at the start, "
              f"{load_average()} at the end")
        print(f"  run {run.status}{'' if finished else ' (timed out, cancelled)'}: {duration:.2f} s from the request")
        for node in ("resize", "gray", "blur"):
            step = figures[node]
            print(f"  step {node:6s}: {step['completed']}/{step['items']} items; first item started "
                  f"{since(step['first_started']) or 0:.2f} s, first done {since(step['first_completed']) or 0:.2f} s, "
                  f"last done {since(step['last_completed']) or 0:.2f} s")
        print(f"  first final output (blur's first item done) : {share(first_item)}")
        print(f"  first final output (its File's created_at)  : {share(first_output)}")
        print(f"  baseline, no streaming (resize's last item) : {share(first_step_done)}")
        if step_level is not None:
            first = step_level["first_output"]
            print(f"  baseline run, items off (STEP_ITEMS_ENABLED=0, one task per step): {step_level['status']} in "
                  f"{step_level['duration']:.2f} s; its first final output at "
                  f"{'-' if first is None else format(first, '.2f') + ' s'}")
            if first is not None:
                print(f"    = {first / step_level['duration']:.1%} of its own run, {first / duration:.1%} of the items "
                      f"run's duration")
        if first_item is not None and first_step_done:
            print(f"  streaming brings the first final output {first_step_done / max(first_item, 1e-6):.1f}x earlier")
        earliest = min((v for v in (first_item, first_output) if v is not None), default=None)
        ok = finished and run.status == "completed" and earliest is not None and earliest < TARGET_SHARE * duration
        print(f"{'PASS' if ok else 'MISS'}: first final output at "
              f"{'-' if earliest is None else format(earliest / duration, '.1%')} of the run "
              f"(target < {TARGET_SHARE:.0%}; without streaming it could not come before "
              f"{'-' if first_step_done is None else format(first_step_done / duration, '.1%')})")
    finally:
        if worker is not None:
            worker.stop()
        purge_queue()
        outputs = run_output_file_ids(runs)
        runs_delete(runs)
        files_delete(outputs)
        files_delete([s.id for s in sources])
        print(f"cleaned up: {len(runs)} runs, {len(outputs)} outputs, {len(sources)} sources")


if __name__ == "__main__":
    main()
