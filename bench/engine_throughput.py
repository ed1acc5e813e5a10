"""Throughput: N real 1024x768 JPEGs through resize -> grayscale -> blur, with a Celery worker of 2
pool processes, every step reading its input from the object store and writing its output as a
new File row + object. Measured in this run, on the same images:

  loop          : the baseline, a plain single-process Python loop doing the same Pillow work (the
                  same operation functions and encoder) and the same object-store reads and writes,
                  on the first --loop-images images (50), before the first phase and after every
                  phase: a phase's ratio is to the mean of the two loops around it;
  bare Celery   : a chain of 3 plain Celery tasks per image doing that same work, with no engine
                  (no runs, no step records, no claims, logs or events): the ceiling of any engine
                  that runs each step as a Celery task on this machine;
  per-image     : one pipeline run per image (N runs of 3 steps);
  batched       : runs of --images-per-run images (default 4 runs of 25);
  one-run       : ONE run of all N images (issue #13: a map step runs as items of STEP_ITEM_BATCH
                  images, streamed from step to step); once per --item-batch value, each with a
                  fresh worker whose STEP_ITEM_BATCH is that value.

Every engine phase runs with the step cache off (STEP_CACHE_ENABLED=0 in the worker: every phase
processes the same images, a cache would answer all but the first) and the worker at the priority
of this process (the loop's). Prints images per second, each one's ratio to the loop, the
thumbnails the workers made of the outputs meanwhile, and where the CPU went (the workers, this
process, and the services: PostgreSQL, Redis, the S3 server, the search server).

Every stored output asks for thumbnails (a task in the same queue). Bare Celery chains make them
as they go; a run's drains hold the pool processes for their slice, so a short run leaves them
queued (purged at the end of the phase). --without-thumbnails makes that task a no-op in the
workers (engine_bench_tasks.py), so every phase does the loop's work and no more.

Targets: one run of 200 images >= 1.7x the loop (issue #13; PASS/MISS per --item-batch value);
runs of 25 >= 1.5x the loop (the target before items).

    .venv/bin/python bench/engine_throughput.py --images 200 --phases bare,one-run --item-batch 1,4,8,16,32 \
        --without-thumbnails
    .venv/bin/python bench/engine_throughput.py              # 100 images, bare, per-image, batched, one-run
    .venv/bin/python bench/engine_throughput.py --quick      # 20 images

Runs on DATABASE_NAME (default imageflow_bench_v2, created and migrated if missing) and its own
queue; everything it stored (runs, output files and their objects and thumbnails, and the source
images unless --keep-sources) is deleted at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time

from engine_common import (
    Worker, bench_isolation, bench_user, cancel_unfinished, django_setup, files_delete, item_figures,
    items_available, load_average, purge_queue, runs_delete, wait_runs,
)

RESIZE = {"width": 512, "keep_aspect": True, "resample": "lanczos"}
BLUR = {"radius": 2}
PHASES = ("bare", "per-image", "batched", "one-run")
ONE_RUN_TARGET = 1.7
BATCHED_TARGET = 1.5


class ServicesCpu:
    """CPU seconds the local services spent since the last call, by service: per process, so a
    backend that ended meanwhile (another session's) drops out instead of making it negative."""

    NAMES = {"postgres": "PostgreSQL", "redis-server": "Redis", "weed": "S3 (SeaweedFS)", "osmem-server": "search"}

    def __init__(self) -> None:
        self.last = self._read()

    def _read(self) -> dict[int, tuple[str, float]]:
        import psutil

        seen: dict[int, tuple[str, float]] = {}
        for proc in psutil.process_iter(["name", "cpu_times"]):
            label = self.NAMES.get(proc.info["name"] or "")
            if label and proc.info["cpu_times"]:
                seen[proc.pid] = (label, proc.info["cpu_times"].user + proc.info["cpu_times"].system)
        return seen

    def spent(self) -> dict[str, float]:
        now = self._read()
        spent: dict[str, float] = {}
        for pid, (label, seconds) in now.items():
            spent[label] = spent.get(label, 0.0) + seconds - self.last.get(pid, (label, 0.0))[1]
        self.last = now
        return spent


def _per_image(spent: dict[str, float], count: int) -> str:
    return ", ".join(f"{label} {1000 * seconds / count:.0f} ms" for label, seconds in sorted(spent.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--quick", action="store_true", help="20 images")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated, from {', '.join(PHASES)} (default: all); the loop always runs")
    parser.add_argument("--item-batch", default="",
                        help="comma-separated STEP_ITEM_BATCH values for the one-run phase, one phase each "
                             "(default: the setting's)")
    parser.add_argument("--attribution", action="store_true",
                        help="also run the per-image engine with the live-progress receivers (and the log shipping "
                             "they trigger) disconnected")
    parser.add_argument("--images-per-run", type=int, default=25,
                        help="input images per run of the batched phase (default 25: 4 runs of 25 at 100 images)")
    parser.add_argument("--phase-timeout", type=float, default=900, help="seconds a phase may take (then its runs "
                                                                         "are cancelled and it is reported unfinished)")
    parser.add_argument("--loop-images", type=int, default=50,
                        help="images of the loop run before the first phase and after each (default 50)")
    parser.add_argument("--keep-sources", action="store_true", help="keep the source images for the next run")
    parser.add_argument("--without-thumbnails", action="store_true",
                        help="workers make no thumbnails (the tasks every stored output asks for are still sent and "
                             "delivered, and do nothing): the thumbnails' share of the workers' time")
    args = parser.parse_args()
    count = 20 if args.quick else args.images
    loop_count = max(1, min(count, args.loop_images))
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    batches = [int(b) for b in args.item_batch.split(",") if b.strip()] or [None]
    bench_isolation(database="imageflow_bench_v2")
    django_setup(prepare=True)

    from celery import chain
    from django.conf import settings
    from django.utils import timezone

    from engine_bench_tasks import image_step
    from executions.demo import demo_image_bytes
    from executions.engine.runners.builtin import BUILTIN_OPERATIONS, _encode, _open
    from executions.models import PipelineExecution
    from executions.services import execution_start
    from files.models import File
    from files.services import file_read_bytes, file_store_bytes
    from registry.models import Pipeline

    load_at_start = load_average()
    began = timezone.now()
    user = bench_user()
    ref = lambda name: {"name": name, "version": "1.0.0"}  # noqa: E731
    definition = {"nodes": [{"id": "resize", "component": ref("resize"), "parameters": RESIZE},
                            {"id": "gray", "component": ref("grayscale"), "parameters": {}},
                            {"id": "blur", "component": ref("blur"), "parameters": BLUR}],
                  "edges": [{"from": "resize", "to": "gray"}, {"from": "gray", "to": "blur"}]}
    pipeline, _ = Pipeline.objects.update_or_create(name="bench-resize-gray-blur", created_by=user,
                                                    defaults={"definition": definition})

    print(f"preparing {count} 1024x768 JPEGs in the object store ...", flush=True)
    sources = list(File.objects.filter(created_by=user, metadata__bench_source=True).order_by("original_name")[:count])
    for index in range(len(sources), count):
        sources.append(file_store_bytes(content=demo_image_bytes(seed=index), original_name=f"bench-{index:04d}.jpg",
                                        created_by=user, prefix="uploads", extra_metadata={"bench_source": True}))
    source_ids = [s.id for s in sources]
    all_runs: list = []

    def step(source, name: str, params: dict):
        # the same decode and encode as a built-in step (executions.engine.runners.builtin)
        decoded = _open(file_read_bytes(source), source.original_name or "", BUILTIN_OPERATIONS[name], params)
        result = BUILTIN_OPERATIONS[name].apply(decoded.image, params)
        content, extension = _encode(result, source=decoded, parameters=params, operation=name)
        return file_store_bytes(content=content, original_name=f"loop-{name}{extension}", created_by=user)

    services_cpu = ServicesCpu()

    def loop() -> dict:
        """The baseline: one process, the same work in a loop, on the first --loop-images images."""
        services_cpu.spent()
        started, cpu_started = time.perf_counter(), time.process_time()
        for source in sources[:loop_count]:
            step(step(step(source, "resize", RESIZE), "grayscale", {}), "blur", BLUR)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "rate": loop_count / seconds, "own_cpu": time.process_time() - cpu_started,
                "services": services_cpu.spent()}

    def phase(body, extra_env: dict | None = None) -> dict:
        """Runs `body` against a fresh worker (after a warm-up run) and measures it."""
        purge_queue()
        worker = Worker(concurrency=args.workers, extra_env={
            "STEP_CACHE_ENABLED": "0", **({"ENGINE_BENCH_NO_THUMBNAILS": "1"} if args.without_thumbnails else {}),
            **(extra_env or {})})
        try:
            warm = execution_start(pipeline=pipeline, inputs=[sources[0].id], user=user).pk
            all_runs.append(warm)
            wait_runs([warm], timeout=120)
            warm_task = timezone.now()
            image_step.delay(str(sources[0].id), "grayscale", {})
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not File.objects.filter(
                    created_by=user, created_at__gte=warm_task, original_name__startswith="celery-").exists():
                time.sleep(0.05)
            worker_cpu_started = worker.cpu_seconds()
            services_cpu.spent()
            window_start = timezone.now()
            started, cpu_started = time.perf_counter(), time.process_time()
            runs, finished = body()
            seconds = time.perf_counter() - started
            outputs = File.objects.filter(created_by=user, created_at__gte=window_start).exclude(pk__in=source_ids)
            return {"seconds": seconds, "worker_cpu": worker.cpu_seconds() - worker_cpu_started,
                    "own_cpu": time.process_time() - cpu_started, "services": services_cpu.spent(), "runs": runs,
                    "finished": finished, "outputs": outputs.count(),
                    "thumbnails": outputs.filter(thumbnails__isnull=False).count()}
        finally:
            worker.stop()
            purge_queue()

    def engine(per_run: int):
        def body() -> tuple[list, bool]:
            runs = [execution_start(pipeline=pipeline, inputs=[s.id for s in sources[i:i + per_run]], user=user).pk
                    for i in range(0, count, per_run)]
            all_runs.extend(runs)
            finished = wait_runs(runs, timeout=args.phase_timeout)
            if not finished:
                cancel_unfinished(runs)
            return runs, finished
        return body

    def bare_celery() -> tuple[list, bool]:
        # Finished when the last task of every chain has stored its output (read from the
        # database: a result-backend wait once hung here with every chain done).
        window = timezone.now()
        for source in sources:
            chain(image_step.s(str(source.id), "resize", RESIZE), image_step.s("grayscale", {}),
                  image_step.s("blur", BLUR)).apply_async()
        deadline = time.monotonic() + args.phase_timeout
        finals = File.objects.filter(created_by=user, created_at__gte=window, original_name__startswith="celery-blur")
        while finals.count() < count:
            if time.monotonic() > deadline:
                return [], False
            time.sleep(0.05)
        return [], True

    planned: list[tuple[str, str, object, dict | None]] = []
    if "bare" in phases:
        planned.append(("bare", "bare Celery chains, no engine", bare_celery, None))
    if "per-image" in phases:
        planned.append(("per-image", "engine, one run per image", engine(1), None))
    if "batched" in phases and args.images_per_run > 1:
        planned.append(("batched", f"engine, runs of {args.images_per_run} images", engine(args.images_per_run), None))
    if "one-run" in phases:
        for batch in batches:
            label = (f"engine, one run, items of {batch or settings.STEP_ITEM_BATCH}{'' if batch else ' (setting)'}"
                     if items_available() else "engine, one run (no items)")
            planned.append((f"one-run-{batch or 'default'}", label, engine(count),
                            {"STEP_ITEM_BATCH": str(batch)} if batch else None))
    if args.attribution:
        planned.append(("quiet", "engine, 1/image, no progress", engine(1), {"ENGINE_BENCH_NO_PROGRESS": "1"}))
    labels = {key: label for key, label, _, _ in planned}
    results: dict[str, dict] = {}
    try:
        # The loop runs before the first phase and after every phase: each phase's ratio is to the
        # mean of the two loops around it (the machine's load moves within minutes).
        loops = [loop()]
        for key, _, body, env in planned:
            results[key] = phase(body, env)
            after = loop()
            results[key]["loop_rate"] = statistics.mean([loops[-1]["rate"], after["rate"]])
            loops.append(after)

        print(f"{count} images, resize(512) -> grayscale -> blur(2), each step reading and writing the object store; "
              f"{args.workers} worker processes; items engine: {'yes' if items_available() else 'no (before #13)'}; "
              f"{'workers make no thumbnails; ' if args.without_thumbnails else ''}"
              f"load average {load_at_start} at the start, {load_average()} at the end")
        rates_text = ", ".join(f"{measured['rate']:.2f}" for measured in loops)
        print(f"  single-process loop, {loop_count} images before the first phase and after each: {rates_text} images/s")
        verdicts: list[str] = []
        for key, result in results.items():
            rate = count / result["seconds"]
            detail = ""
            if result["runs"]:
                done = PipelineExecution.objects.filter(pk__in=result["runs"], status="completed").count()
                detail = f", {done}/{len(result['runs'])} runs completed"
                if len(result["runs"]) == 1 and items_available():
                    figures = item_figures(result["runs"][0])["total"]
                    detail += f", {figures['items']} items, {figures['decoded']} decodes"
            if not result["finished"]:
                detail += ", NOT FINISHED in time"
            ratio = rate / result["loop_rate"]
            print(f"  {labels[key]:31s}: {rate:6.2f} images/s  ({result['seconds']:.1f} s{detail})  "
                  f"ratio {ratio:4.2f}x to the loops around it ({result['loop_rate']:.2f}/s); thumbnails made "
                  f"meanwhile {result['thumbnails']}/{result['outputs']} outputs")
            if key.startswith("one-run"):
                verdicts.append(f"{'PASS' if ratio >= ONE_RUN_TARGET and result['finished'] else 'MISS'}: "
                                f"{labels[key]}: {ratio:.2f}x the loop (target >= {ONE_RUN_TARGET}x)")
            if key == "batched":
                verdicts.append(f"{'PASS' if ratio >= BATCHED_TARGET and result['finished'] else 'MISS'}: "
                                f"{labels[key]}: {ratio:.2f}x the loop (target >= {BATCHED_TARGET}x, before items)")
        print("  CPU per image (ms):")
        print(f"    {'loop':31s}: this process {1000 * loops[0]['own_cpu'] / loop_count:3.0f}; "
              f"{_per_image(loops[0]['services'], loop_count)}")
        for key, result in results.items():
            print(f"    {labels[key]:31s}: workers {1000 * result['worker_cpu'] / count:3.0f}, this process "
                  f"{1000 * result['own_cpu'] / count:3.0f}; {_per_image(result['services'], count)}")
        for verdict in verdicts:
            print(verdict)
    finally:
        purge_queue()
        runs_delete(all_runs)
        made = list(File.objects.filter(created_by=user, created_at__gte=began).exclude(pk__in=source_ids)
                    .values_list("id", flat=True))
        files_delete(made)
        if not args.keep_sources:
            files_delete(source_ids)
        print(f"cleaned up: {len(all_runs)} runs, {len(made)} output files"
              f"{'' if args.keep_sources else f', {len(source_ids)} sources'}")


if __name__ == "__main__":
    main()
