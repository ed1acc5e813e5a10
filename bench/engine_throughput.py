"""Throughput: N real 1024x768 JPEGs through resize -> grayscale -> blur, with a Celery worker of 2
pool processes, every step reading its input from the object store and writing its output as a
new File row + object. Measured in this run, on the same images:

  loop          : the baseline, a plain single-process Python loop doing the same Pillow work (the
                  same operation functions and encoder) and the same object-store reads and writes;
  bare Celery   : a chain of 3 plain Celery tasks per image doing that same work, with no engine
                  (no runs, no step records, no claims, logs or events): the ceiling of any engine
                  that runs each step as a Celery task on this machine;
  engine, 1/run : one pipeline run per image (100 runs of 3 steps);
  engine, batch : runs of --images-per-run images (default 4 runs of 25): a step processes its
                  images with STEP_IMAGE_CONCURRENCY threads.

Prints images per second, each one's ratio to the loop, and where the CPU went (the workers, this
process, and the services: PostgreSQL, Redis, the S3 server, the search server).
Target: engine >= 1.5x the loop.

    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_throughput.py            # 100 images
    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_throughput.py --quick    # 20 images
"""

from __future__ import annotations

import argparse
import time

from engine_common import Worker, bench_user, django_setup, purge_queue

RESIZE = {"width": 512, "keep_aspect": True, "resample": "lanczos"}
BLUR = {"radius": 2}


class ServicesCpu:
    """CPU seconds the local services spent since the last call, by service."""

    NAMES = {"postgres": "PostgreSQL", "redis-server": "Redis", "weed": "S3 (SeaweedFS)", "osmem-server": "search"}

    def __init__(self) -> None:
        self.last = self._read()

    def _read(self) -> dict[str, float]:
        import psutil

        totals: dict[str, float] = {}
        for proc in psutil.process_iter(["name", "cpu_times"]):
            label = self.NAMES.get(proc.info["name"] or "")
            if label and proc.info["cpu_times"]:
                totals[label] = totals.get(label, 0.0) + proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return totals

    def spent(self) -> dict[str, float]:
        now = self._read()
        spent = {label: now[label] - self.last.get(label, 0.0) for label in now}
        self.last = now
        return spent


def _per_image(spent: dict[str, float], count: int) -> str:
    return ", ".join(f"{label} {1000 * seconds / count:.0f} ms" for label, seconds in sorted(spent.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="worker pool processes")
    parser.add_argument("--quick", action="store_true", help="20 images")
    parser.add_argument("--attribution", action="store_true",
                        help="also run the engine with the live-progress receivers (and the log shipping they "
                             "trigger) disconnected")
    parser.add_argument("--images-per-run", type=int, default=25,
                        help="input images per run of the batched engine phase (default 25: 4 runs of 25); a "
                             "step processes its images with STEP_IMAGE_CONCURRENCY threads; 1 skips the phase")
    args = parser.parse_args()
    count = 20 if args.quick else args.images
    django_setup()

    from celery import chain

    from engine_bench_tasks import image_step
    from executions.models import FINISHED_EXECUTION_STATUSES, PipelineExecution
    from executions.engine.runners.builtin import BUILTIN_OPERATIONS, _encode, _open
    from executions.catalogue import builtin_components_register
    from executions.demo import demo_image_bytes
    from executions.services import execution_start
    from files.models import File
    from files.services import file_read_bytes, file_store_bytes
    from registry.models import Pipeline

    builtin_components_register()
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

    def step(source, name: str, params: dict):
        # the same decode and encode as a built-in step (executions.engine.runners.builtin)
        decoded = _open(file_read_bytes(source), source.original_name or "", BUILTIN_OPERATIONS[name], params)
        result = BUILTIN_OPERATIONS[name].apply(decoded.image, params)
        content, extension = _encode(result, source=decoded, parameters=params, operation=name)
        return file_store_bytes(content=content, original_name=f"loop-{name}{extension}", created_by=user)

    # baseline: one process, the same work in a loop
    services_cpu = ServicesCpu()
    started, cpu_started = time.perf_counter(), time.process_time()
    for source in sources:
        step(step(step(source, "resize", RESIZE), "grayscale", {}), "blur", BLUR)
    loop_seconds, loop_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    loop_services = services_cpu.spent()

    def phase(body, extra_env: dict | None = None) -> dict:
        """Runs `body` against a fresh 2-process worker (after a warm-up run) and measures it."""
        purge_queue()
        worker = Worker(concurrency=args.workers, extra_env=extra_env)
        try:
            wait_runs([execution_start(pipeline=pipeline, inputs=[sources[0].id], user=user).pk])  # warm-up
            image_step.delay(str(sources[0].id), "grayscale", {}).get(timeout=60)
            worker_cpu_started = worker.cpu_seconds()
            services_cpu.spent()
            started, cpu_started = time.perf_counter(), time.process_time()
            runs = body()
            return {"seconds": time.perf_counter() - started, "worker_cpu": worker.cpu_seconds() - worker_cpu_started,
                    "own_cpu": time.process_time() - cpu_started, "services": services_cpu.spent(), "runs": runs}
        finally:
            worker.stop()

    def wait_runs(runs: list) -> None:
        while PipelineExecution.objects.filter(pk__in=runs).exclude(status__in=FINISHED_EXECUTION_STATUSES).exists():
            time.sleep(0.05)

    def engine(per_run: int):
        def body() -> list:
            runs = [execution_start(pipeline=pipeline, inputs=[s.id for s in sources[i:i + per_run]], user=user).pk
                    for i in range(0, count, per_run)]
            wait_runs(runs)
            return runs
        return body

    def bare_celery() -> list:
        chains = [chain(image_step.s(str(source.id), "resize", RESIZE), image_step.s("grayscale", {}),
                        image_step.s("blur", BLUR)).apply_async() for source in sources]
        for result in chains:
            result.get(timeout=300)
        return []

    results = {"bare": phase(bare_celery), "engine": phase(engine(1))}
    if args.images_per_run > 1:
        results["batched"] = phase(engine(args.images_per_run))
    if args.attribution:
        results["quiet"] = phase(engine(1), {"ENGINE_BENCH_NO_PROGRESS": "1"})

    loop_rate = count / loop_seconds
    print(f"{count} images, resize(512) -> grayscale -> blur(2), each step reading and writing the object store; "
          f"{args.workers} worker processes")
    print(f"  single-process loop            : {loop_rate:6.2f} images/s  ({loop_seconds:.1f} s)")
    labels = {"bare": "bare Celery chains, no engine",
              "engine": "engine, one run per image",
              "batched": f"engine, runs of {args.images_per_run} images",
              "quiet": "engine, 1/image, no progress"}
    for key, result in results.items():
        rate = count / result["seconds"]
        completed = ""
        if result["runs"]:
            done = PipelineExecution.objects.filter(pk__in=result["runs"], status="completed").count()
            completed = f", {done}/{len(result['runs'])} runs completed"
        print(f"  {labels[key]:31s}: {rate:6.2f} images/s  ({result['seconds']:.1f} s{completed})  "
              f"ratio {rate / loop_rate:4.2f}x")
    print("  target: engine >= 1.5x the loop")
    print("  CPU per image (ms):")
    print(f"    {'loop':31s}: this process {1000 * loop_cpu / count:3.0f}; {_per_image(loop_services, count)}")
    for key, result in results.items():
        print(f"    {labels[key]:31s}: workers {1000 * result['worker_cpu'] / count:3.0f}, this process "
              f"{1000 * result['own_cpu'] / count:3.0f}; {_per_image(result['services'], count)}")


if __name__ == "__main__":
    main()
