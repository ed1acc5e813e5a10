"""Throughput: N real 1024x768 JPEGs through resize -> grayscale -> blur.

  engine   : one run per image, executed by a Celery worker with 2 pool processes (each step reads
             its input from the object store and writes its output as a new File + object);
  baseline : a plain single-process Python loop doing the same Pillow work (the same operation
             functions and encoder) and the same object-store reads and writes.

Both are measured in this run on the same images; prints images per second and the ratio.
Target: engine >= 1.5x the loop.

    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_throughput.py            # 100 images
    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_throughput.py --quick    # 20 images
    DATABASE_NAME=imageflow_engine .venv/bin/python bench/engine_throughput.py --images-per-run 25   # 4 runs
"""

from __future__ import annotations

import argparse
import io
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
    parser.add_argument("--images-per-run", type=int, default=1,
                        help="input images per run (default 1: one run per image); with more, a step processes "
                             "its images with STEP_IMAGE_CONCURRENCY threads")
    args = parser.parse_args()
    count = 20 if args.quick else args.images
    django_setup()

    from PIL import Image

    from django.db.models import Max, Min

    from executions.models import FINISHED_EXECUTION_STATUSES, ComponentExecution, PipelineExecution
    from executions.runners.builtin import BUILTIN_OPERATIONS, _encode
    from executions.services import builtin_components_register, demo_image_bytes, execution_start
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
        image = Image.open(io.BytesIO(file_read_bytes(source)))
        image.load()
        result = BUILTIN_OPERATIONS[name].apply(image, params)
        content, extension = _encode(result, source_format=image.format, parameters=params, operation=name)
        return file_store_bytes(content=content, original_name=f"loop-{name}{extension}", created_by=user)

    # baseline: one process, the same work in a loop
    services_cpu = ServicesCpu()
    started, cpu_started = time.perf_counter(), time.process_time()
    for source in sources:
        step(step(step(source, "resize", RESIZE), "grayscale", {}), "blur", BLUR)
    loop_seconds, loop_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    loop_services = services_cpu.spent()

    per_run = max(1, args.images_per_run)

    def engine_phase(extra_env: dict | None = None) -> tuple[list, float, float, float]:
        purge_queue()
        worker = Worker(concurrency=args.workers, extra_env=extra_env)
        try:
            warm = execution_start(pipeline=pipeline, inputs=[sources[0].id], user=user)
            while PipelineExecution.objects.filter(pk=warm.pk).values_list("status", flat=True).get() \
                    not in FINISHED_EXECUTION_STATUSES:
                time.sleep(0.05)
            worker_cpu_started = worker.cpu_seconds()
            services_cpu.spent()
            started, cpu_started = time.perf_counter(), time.process_time()
            runs = [execution_start(pipeline=pipeline, inputs=[s.id for s in sources[i:i + per_run]], user=user).pk
                    for i in range(0, count, per_run)]
            start_cpu = time.process_time() - cpu_started
            while PipelineExecution.objects.filter(pk__in=runs).exclude(status__in=FINISHED_EXECUTION_STATUSES).exists():
                time.sleep(0.1)
            elapsed = time.perf_counter() - started
            return runs, elapsed, worker.cpu_seconds() - worker_cpu_started, start_cpu, services_cpu.spent()
        finally:
            worker.stop()

    runs, engine_seconds, worker_cpu, start_cpu, engine_services = engine_phase()
    quiet = engine_phase({"ENGINE_BENCH_NO_PROGRESS": "1"}) if args.attribution else None
    completed = PipelineExecution.objects.filter(pk__in=runs, status="completed").count()
    window = ComponentExecution.objects.filter(execution_id__in=runs).aggregate(first=Min("started_at"),
                                                                                 last=Max("completed_at"))
    busy_seconds = (window["last"] - window["first"]).total_seconds()
    loop_rate, engine_rate = count / loop_seconds, count / engine_seconds
    print(f"{count} images, resize(512) -> grayscale -> blur(2), each step reading and writing the object store")
    print(f"  single-process loop      : {loop_rate:6.2f} images/s  ({loop_seconds:.1f} s)")
    print(f"  engine, {args.workers} worker processes: {engine_rate:6.2f} images/s  ({engine_seconds:.1f} s, "
          f"{completed}/{len(runs)} runs of {per_run} image(s) completed)")
    print(f"  ratio engine/loop        : {engine_rate / loop_rate:5.2f}x   (target >= 1.5x)")
    print(f"  workers' busy window     : {count / busy_seconds:6.2f} images/s  (first step start to last step end, "
          f"{busy_seconds:.1f} s; ratio {count / busy_seconds / loop_rate:.2f}x)")
    print(f"  CPU per image            : loop {1000 * loop_cpu / count:.0f} ms; engine {1000 * worker_cpu / count:.0f} ms "
          f"in the workers + {1000 * start_cpu / count:.0f} ms starting the run (this process)")
    print("  CPU per image of the services (PostgreSQL, Redis, S3 server, search server):")
    print(f"    loop  : {_per_image(loop_services, count)}")
    print(f"    engine: {_per_image(engine_services, count)}")
    if quiet:
        _, quiet_seconds, quiet_cpu, _, _ = quiet
        print(f"  engine without live-progress receivers/log shipping: {count / quiet_seconds:6.2f} images/s "
              f"(ratio {count / quiet_seconds / loop_rate:.2f}x), {1000 * quiet_cpu / count:.0f} ms CPU per image "
              f"in the workers")


if __name__ == "__main__":
    main()
