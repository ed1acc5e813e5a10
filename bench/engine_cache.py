"""Step cache: the same pipeline (resize -> grayscale -> blur, all deterministic built-ins) on the
same 200 1024x768 JPEGs run twice, one run after the other, 2 worker processes, the step cache on.
The images are new to the cache (each has a block of random pixels), so the first run computes
everything: it is the baseline. The second finds every item's key (component, parameters, input
checksums) and reuses the outputs.

The first run's outputs each ask for thumbnails; those tasks wait in the queue while the run's
drains hold the worker processes, so by default the second run starts once the queue is empty
(--no-settle: right away, behind them; the time it then waits is printed too).

Prints both runs' durations (run request -> run completed_at) and their ratio, the image decodes
of each run (the sum of its items' metrics->'decoded', as the built-in runner reports them, and how
many items reported any), the steps' items_cached, and whether the second run's final outputs
have the first run's checksums.

Targets: second run >= 20x faster than the first; zero image decodes in the second run.

    .venv/bin/python bench/engine_cache.py                 # 200 images
    .venv/bin/python bench/engine_cache.py --images 40     # quicker

Runs on DATABASE_NAME (default imageflow_bench_v2, created and migrated if missing) and its own
queue; the runs, their cache entries, outputs and sources are deleted at the end.
"""

from __future__ import annotations

import argparse
import time

from engine_common import (
    Worker, bench_isolation, bench_user, cancel_unfinished, django_setup, files_delete, item_figures,
    items_available, load_average, purge_queue, queue_length, run_output_file_ids, runs_delete, sources_create,
    wait_runs,
)

SPEED_TARGET = 20.0
RESIZE = {"width": 512, "keep_aspect": True, "resample": "lanczos"}
BLUR = {"radius": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--item-batch", type=int, default=None, help="STEP_ITEM_BATCH of the worker (default: setting)")
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--no-settle", action="store_true",
                        help="start the second run right after the first, behind the thumbnail tasks of the first "
                             "run's outputs still queued (default: once the queue is empty)")
    parser.add_argument("--settle-timeout", type=float, default=300)
    args = parser.parse_args()
    bench_isolation(database="imageflow_bench_v2")
    django_setup(prepare=True)

    from django.conf import settings
    from django.utils import timezone

    from executions.models import ComponentExecution, PipelineExecution
    from executions.services import execution_start
    from files.models import File
    from registry.models import Pipeline

    if not items_available():
        raise SystemExit("the items engine (issue #13) is not here: no step cache to measure")
    load_at_start = load_average()
    user = bench_user()
    ref = lambda name: {"name": name, "version": "1.0.0"}  # noqa: E731
    definition = {"nodes": [{"id": "resize", "component": ref("resize"), "parameters": RESIZE},
                            {"id": "gray", "component": ref("grayscale"), "parameters": {}},
                            {"id": "blur", "component": ref("blur"), "parameters": BLUR}],
                  "edges": [{"from": "resize", "to": "gray"}, {"from": "gray", "to": "blur"}]}
    pipeline, _ = Pipeline.objects.update_or_create(name="bench-cache-resize-gray-blur", created_by=user,
                                                    defaults={"definition": definition})
    print(f"preparing {args.images} 1024x768 JPEGs (new to the cache) in the object store ...", flush=True)
    sources = sources_create(count=args.images + 1, user=user, unique=True, tag="bench-cache")
    runs: list = []
    worker = None

    def timed_run(inputs: list) -> tuple[str, float, bool]:
        requested = timezone.now()
        run_id = execution_start(pipeline=pipeline, inputs=inputs, user=user).pk
        runs.append(run_id)
        finished = wait_runs([run_id], timeout=args.run_timeout, poll=0.01)
        if not finished:
            cancel_unfinished([run_id])
        run = PipelineExecution.objects.get(pk=run_id)
        return run_id, ((run.completed_at or timezone.now()) - requested).total_seconds(), finished

    try:
        purge_queue()  # the sources' thumbnail requests
        extra = {"STEP_CACHE_ENABLED": "1", **({"STEP_ITEM_BATCH": str(args.item_batch)} if args.item_batch else {})}
        worker = Worker(concurrency=args.workers, extra_env=extra)
        timed_run([sources[-1].id])  # warm-up on an image of its own: imports, connections
        inputs = [s.id for s in sources[:-1]]
        first_id, first_seconds, first_finished = timed_run(inputs)
        backlog, settled = queue_length(), 0.0
        if not args.no_settle:
            # The first run's outputs each asked for thumbnails; those tasks wait in the queue
            # (the drains held both processes) and a second run's drains would queue behind them.
            began = time.perf_counter()
            while queue_length() > 0 and time.perf_counter() - began < args.settle_timeout:
                time.sleep(0.2)
            time.sleep(1)  # the last ones a pool process holds
            settled = time.perf_counter() - began
        second_id, second_seconds, second_finished = timed_run(inputs)
        worker.stop()

        batch = args.item_batch or settings.STEP_ITEM_BATCH
        print(f"{args.images} x 1024x768 JPEG, resize(512) -> grayscale -> blur(2), run twice, {args.workers} worker "
              f"processes, items of {batch}; load average {load_at_start} at the start, {load_average()} at the end")
        summaries = {}
        for label, run_id, seconds, finished in (("first run (baseline)", first_id, first_seconds, first_finished),
                                                 ("second run", second_id, second_seconds, second_finished)):
            run = PipelineExecution.objects.get(pk=run_id)
            figures = item_figures(run_id)
            total = figures["total"]
            cached = ", ".join(f"{node} {step['items_cached']}/{step['items']}" for node, step in figures["steps"].items())
            summaries[run_id] = total
            first_item = (total["first_started"] - run.created_at).total_seconds() if total["first_started"] else None
            print(f"  {label:20s}: first item running {first_item if first_item is None else round(first_item, 3)} s "
                  f"after the run was created")
            print(f"  {label:20s}: {run.status}{'' if finished else ' (timed out, cancelled)'} in {seconds:7.3f} s "
                  f"({args.images / seconds:7.1f} images/s); decodes {total['decoded']} (reported by "
                  f"{total['reporting_decoded']}/{total['items']} items); items_cached {cached}")
        ratio = first_seconds / second_seconds if second_seconds > 0 else float("inf")
        print(f"  queue after the first run: {backlog} messages (its outputs' thumbnail tasks); "
              + (f"the second run started right away, behind them" if args.no_settle
                 else f"the second run started once the queue was empty, {settled:.1f} s later"))
        print(f"  second run {ratio:.1f}x faster than the first")

        def final_checksums(run_id) -> list:
            step = ComponentExecution.objects.get(execution_id=run_id, node_id="blur")
            return sorted(File.objects.filter(metadata__execution_id=str(run_id), metadata__step_id=str(step.pk))
                          .values_list("checksum", flat=True))

        first_sums, second_sums = final_checksums(first_id), final_checksums(second_id)
        same = bool(first_sums) and first_sums == second_sums
        print(f"  final outputs: {len(first_sums)} / {len(second_sums)}, same checksums: {'yes' if same else 'NO'}")
        fast = second_finished and ratio >= SPEED_TARGET
        print(f"{'PASS' if fast else 'MISS'}: second run {ratio:.1f}x faster than the first "
              f"({first_seconds:.2f} s -> {second_seconds:.3f} s; target >= {SPEED_TARGET:.0f}x)")
        second_decodes = summaries[second_id]["decoded"]
        no_decodes = second_finished and second_decodes == 0 and summaries[first_id]["decoded"] > 0
        print(f"{'PASS' if no_decodes else 'MISS'}: decodes in the second run {second_decodes} (first run "
              f"{summaries[first_id]['decoded']}; target 0)")
    finally:
        if worker is not None:
            worker.stop()
        purge_queue()
        outputs = run_output_file_ids(runs)
        runs_delete(runs)
        files_delete(outputs)
        files_delete([s.id for s in sources])
        print(f"cleaned up: {len(runs)} runs and their cache entries, {len(outputs)} outputs, {len(sources)} sources")


if __name__ == "__main__":
    main()
