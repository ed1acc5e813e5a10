"""Scale: one run of N tiny images (64x64 PNG) through a one-step map pipeline, for N = 1,000,
10,000 and 100,000 (issue #13), started through the API of a real HTTP server (one uvicorn
process serving the project, `POST /api/v1/pipelines/{id}/run/` with a token), run by a fresh
2-process worker with beat beside it (sweep, log shipping, dashboard, cache eviction).

Components: `passthrough` (no image work: its inputs are File rows only, bulk-inserted with no
object behind them, which passthrough never reads) and `grayscale` (read, decode, convert, encode,
write: the rows point round-robin at 16 real 64x64 PNG objects, so the store is written N times
and read N times; run up to --grayscale-max, where the object store keeps up). The step cache is
off (STEP_CACHE_ENABLED=0: the grayscale inputs repeat 16 images).

Per run it prints:
  engine time per image and per item: (run request -> run completed) minus the work itself,
      divided by the images (items); the work itself is the items' own execution time
      (StepItem.execution_time_ms summed: their bodies' reads, decodes, encodes and writes; ~0 for
      passthrough) divided by the 2 worker processes. For reference, the per-image time of the
      same read/decode/convert/encode/write done in this process on 200 of the images;
  the time from the run request to its first item running (min StepItem.started_at);
  the answer time of the start request;
  peak memory (VmHWM: the process's largest resident set since it started) of the web process,
      of the worker's main and pool processes and of beat; each is a fresh process per run.

Targets: engine time per item at 100,000 <= 1.5x that at 1,000 (the baseline: the same
component's run at the smallest size, in this invocation); web, every worker process and beat
< 500 MB each at 100,000; first item running < 2 s after the request at 100,000.

    .venv/bin/python bench/engine_scale.py                                 # 1,000 10,000 100,000
    .venv/bin/python bench/engine_scale.py --sizes 1000,10000 --components passthrough

Runs on DATABASE_NAME (default imageflow_bench_v2, created and migrated if missing) and its own
queue; a run that exceeds --run-timeout (or would end after --until, HH:MM UTC) is cancelled and
reported unfinished. Its runs, rows and objects are deleted after each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from engine_common import (
    ROOT, Beat, Worker, bench_isolation, bench_user, cancel_unfinished, django_setup, files_delete, item_figures,
    items_available, load_average, peak_rss_mb, purge_queue, run_output_file_ids, runs_delete, wait_runs,
)

GROWTH_TARGET = 1.5
MEMORY_TARGET_MB = 500
FIRST_ITEM_TARGET_S = 2.0
DISTINCT_OBJECTS = 16
WORK_SAMPLE = 200


def tiny_png(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64 * 64)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Web:
    """One uvicorn process serving the project (no --workers: the server is this one process)."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (ROOT / "var" / "log" / "engine-bench-web.log").open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--lifespan", "off", "--no-access-log"],
            cwd=ROOT, env={**os.environ, "LOG_LEVEL": "WARNING"}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        import requests

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"web server exited: {(ROOT / 'var/log/engine-bench-web.log').read_text()[-2000:]}")
            try:
                requests.get(f"{self.base}/api/schema/", timeout=5)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise SystemExit("web server did not start")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss / 2 ** 20

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated input counts")
    parser.add_argument("--components", default="passthrough,grayscale")
    parser.add_argument("--grayscale-max", type=int, default=10000,
                        help="largest size run with grayscale (the object store's pace); 0: no limit")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--item-batch", type=int, default=None, help="STEP_ITEM_BATCH of the worker (default: setting)")
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds a run may take")
    parser.add_argument("--until", default=None, help="HH:MM (UTC): no run may go on past this")
    parser.add_argument("--baseline-only", action="store_true",
                        help="only the input generation and the in-process work (no engine runs)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    bench_isolation(database="imageflow_bench_v2")
    django_setup(prepare=True)

    import requests
    from django.conf import settings
    from django.core.files.storage import default_storage
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from executions.engine.runners.builtin import BUILTIN_OPERATIONS, _encode, _open
    from executions.models import PipelineExecution
    from files.inspection import sha256_of
    from files.models import File
    from files.services import file_read_bytes, file_store_bytes
    from registry.models import Pipeline

    engine_runs = items_available() and not args.baseline_only
    if not engine_runs:
        print("baseline only (--baseline-only, or no items engine, issue #13): the input generation and the work")
    user = bench_user()
    token, _ = Token.objects.get_or_create(user=user)
    until = None
    if args.until:
        hours, minutes = (int(v) for v in args.until.split(":"))
        until = dt.datetime.now(dt.timezone.utc).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    batch = args.item_batch or settings.STEP_ITEM_BATCH
    print(f"load average {load_average()}; {args.workers} worker processes, items of {batch} images; "
          f"web: one uvicorn process, requests through HTTP on 127.0.0.1")

    # The real objects the grayscale rows point at.
    objects: list[tuple[str, str, int]] = []
    if "grayscale" in components:
        for seed in range(DISTINCT_OBJECTS):
            content = tiny_png(seed)
            key = f"bench-scale/{uuid.uuid4().hex}.png"
            key = default_storage.save(key, io.BytesIO(content))
            objects.append((key, sha256_of(io.BytesIO(content))[0], len(content)))

    def inputs_create(component: str, size: int) -> tuple[list, float]:
        started = time.perf_counter()
        tag = uuid.uuid4().hex[:8]
        rows = []
        for index in range(size):
            if component == "passthrough":
                key, checksum, length = f"bench-scale/none/{tag}-{index}.png", uuid.uuid4().hex * 2, 200
            else:
                key, checksum, length = objects[index % len(objects)]
            rows.append(File(original_name=f"scale-{index:06d}.png", mime_type="image/png", file_size=length,
                             storage_path=key, checksum=checksum, created_by=user,
                             metadata={"format": "PNG", "width": 64, "height": 64, "bench_scale": tag}))
        File.objects.bulk_create(rows, batch_size=5000)
        return [row.id for row in rows], time.perf_counter() - started

    def work_per_image() -> float:
        """The grayscale step's own work, in this process: read, decode, convert, encode, write."""
        ids, _ = inputs_create("grayscale", WORK_SAMPLE)
        sources = list(File.objects.filter(pk__in=ids))
        operation = BUILTIN_OPERATIONS["grayscale"]
        made = []
        started = time.perf_counter()
        for source in sources:
            decoded = _open(file_read_bytes(source), source.original_name, operation, {})
            content, extension = _encode(operation.apply(decoded.image, {}), source=decoded, parameters={},
                                         operation="grayscale")
            made.append(file_store_bytes(content=content, original_name=f"work{extension}", created_by=user).id)
        seconds = (time.perf_counter() - started) / len(sources)
        purge_queue()  # their thumbnail requests
        files_delete(made)
        files_delete(ids, objects=False)
        return seconds

    results: dict[tuple[str, int], dict] = {}
    for component in components:
        pipeline, _ = Pipeline.objects.update_or_create(
            name=f"bench-scale-{component}", created_by=user,
            defaults={"definition": {"nodes": [{"id": "map", "component": {"name": component, "version": "1.0.0"},
                                                "parameters": {}}], "edges": []}})
        for size in sizes:
            if component == "grayscale" and args.grayscale_max and size > args.grayscale_max:
                print(f"{component} x {size}: skipped (over --grayscale-max {args.grayscale_max})")
                continue
            timeout = args.run_timeout
            if until is not None:
                timeout = min(timeout, (until - dt.datetime.now(dt.timezone.utc)).total_seconds())
                if timeout < 60:
                    print(f"{component} x {size}: skipped (--until {args.until} is too close)")
                    continue
            work = work_per_image() if component == "grayscale" else 0.0
            input_ids, insert_seconds = inputs_create(component, size)
            print(f"{component} x {size}: {size} File rows bulk-inserted in {insert_seconds:.1f} s; "
                  f"work {1000 * work:.2f} ms per image in this process", flush=True)
            if not engine_runs:
                files_delete(input_ids, objects=False)
                continue
            run_id = None
            purge_queue()
            worker = beat = web = None
            try:
                extra = {"STEP_CACHE_ENABLED": "0", **({"STEP_ITEM_BATCH": str(args.item_batch)} if args.item_batch else {})}
                worker = Worker(concurrency=args.workers, extra_env=extra)
                beat = Beat()
                web = Web()
                web_idle = web.rss_mb()
                body = json.dumps({"inputs": [str(i) for i in input_ids]}, separators=(",", ":"))
                requested = timezone.now()
                began = time.perf_counter()
                answer = requests.post(f"{web.base}/api/v1/pipelines/{pipeline.pk}/run/", data=body, timeout=600,
                                       headers={"Authorization": f"Token {token.key}",
                                                "Content-Type": "application/json"})
                answered = time.perf_counter() - began
                if answer.status_code != 202:
                    raise SystemExit(f"start request answered {answer.status_code}: {answer.text[:500]}")
                run_id = answer.json()["id"]
                finished = wait_runs([run_id], timeout=timeout, poll=0.2 if size >= 10000 else 0.05)
                if not finished:
                    cancel_unfinished([run_id])
                run = PipelineExecution.objects.get(pk=run_id)
                figures = item_figures(run_id)
                results[(component, size)] = {
                    "finished": finished, "status": run.status, "answered": answered, "web_idle": web_idle,
                    "web_peak": peak_rss_mb(web.process.pid), "worker_peak": worker.peak_rss_mb(),
                    "beat_peak": beat.peak_rss_mb(), "body_mb": len(body) / 2 ** 20,
                    "duration": ((run.completed_at or timezone.now()) - requested).total_seconds(),
                    "first_item": ((figures["total"]["first_started"] - requested).total_seconds()
                                   if figures["total"]["first_started"] else None),
                    "items": figures["total"]["items"], "completed_items": figures["total"]["completed"],
                    "execution_ms": figures["total"]["execution_ms"], "work": work, "load": load_average(),
                }
                result = results[(component, size)]
                # The work itself: the items' own execution time (their bodies: reads, decodes,
                # encodes, writes), spread over the worker processes; the rest is the engine's.
                engine = result["duration"] - result["execution_ms"] / 1000 / args.workers
                result["per_image_ms"] = 1000 * engine / size
                result["per_item_ms"] = 1000 * engine / max(result["items"], 1)
                result["wall_per_item_ms"] = 1000 * result["duration"] / max(result["items"], 1)
                print(f"  {run.status}{'' if finished else ' (timed out, cancelled)'} in {result['duration']:.1f} s; "
                      f"{result['completed_items']}/{result['items']} items; first item running "
                      f"{result['first_item'] if result['first_item'] is None else round(result['first_item'], 2)} s "
                      f"after the request; request answered in {answered:.2f} s ({result['body_mb']:.1f} MB body); "
                      f"load {result['load']}", flush=True)
            finally:
                for process in (web, beat, worker):
                    if process is not None:
                        process.stop()
                purge_queue()
                outputs = run_output_file_ids([run_id]) if run_id and component != "passthrough" else []
                if run_id:
                    runs_delete([run_id])
                files_delete(outputs)
                files_delete(input_ids, objects=False)

    bucket = getattr(default_storage, "bucket", None)
    if objects and bucket is not None:
        bucket.delete_objects(Delete={"Objects": [{"Key": key} for key, _, _ in objects], "Quiet": True})
    if not results:
        return

    print()
    print("engine ms = (request -> run completed) minus the items' own execution time / worker processes, per "
          "input image and per item; 'wall/item' is the whole time per item; 'work/img' the same image work done in "
          "this process (read, decode, convert, encode, write), for reference")
    print(f"{'run':24s} {'status':10s} {'total s':>8s} {'work/img':>8s} {'wall/item':>9s} {'engine/img':>10s} "
          f"{'engine/item':>11s} {'vs smallest':>11s} {'1st item s':>10s} {'answer s':>8s} {'web MB':>13s} "
          f"{'worker MB (main, pools)':>24s} {'beat MB':>7s}")
    verdicts = []
    for component in components:
        measured = sorted(size for c, size in results if c == component)
        if not measured:
            continue
        smallest = results[(component, measured[0])]
        for size in measured:
            r = results[(component, size)]
            growth = r["per_item_ms"] / smallest["per_item_ms"] if smallest["per_item_ms"] > 0 else float("nan")
            worker_text = ", ".join(f"{v:.0f}" for v in r["worker_peak"].values())
            first = "-" if r["first_item"] is None else f"{r['first_item']:.2f}"
            print(f"{component + ' x ' + format(size, ','):24s} {r['status']:10s} {r['duration']:8.1f} "
                  f"{1000 * r['work']:8.2f} {r['wall_per_item_ms']:9.2f} {r['per_image_ms']:10.2f} "
                  f"{r['per_item_ms']:11.2f} {growth:10.2f}x {first:>10s} "
                  f"{r['answered']:8.2f} {r['web_idle']:5.0f} -> {r['web_peak'] or 0:4.0f} {worker_text:>24s} "
                  f"{r['beat_peak'] or 0:7.0f}")
        largest = measured[-1]
        r = results[(component, largest)]
        growth = r["per_item_ms"] / smallest["per_item_ms"] if smallest["per_item_ms"] > 0 else float("nan")
        scope = "" if largest == 100000 else f" (largest run here: {largest:,}, not 100,000)"
        if len(measured) > 1:
            verdicts.append(f"{'PASS' if growth <= GROWTH_TARGET and r['finished'] else 'MISS'}: {component}: engine "
                            f"time per item {growth:.2f}x from {measured[0]:,} to {largest:,} "
                            f"(target <= {GROWTH_TARGET}x){scope}")
        peaks = [r["web_peak"] or 0, *r["worker_peak"].values(), r["beat_peak"] or 0]
        verdicts.append(f"{'PASS' if max(peaks) < MEMORY_TARGET_MB else 'MISS'}: {component} x {largest:,}: largest "
                        f"process {max(peaks):.0f} MB (web {r['web_peak'] or 0:.0f}, worker "
                        f"{max(r['worker_peak'].values(), default=0):.0f}, beat {r['beat_peak'] or 0:.0f}; "
                        f"target < {MEMORY_TARGET_MB} MB each){scope}")
        first_ok = r["first_item"] is not None and r["first_item"] < FIRST_ITEM_TARGET_S
        verdicts.append(f"{'PASS' if first_ok else 'MISS'}: {component} x {largest:,}: first item running "
                        f"{'never' if r['first_item'] is None else format(r['first_item'], '.2f') + ' s'} after the "
                        f"request (target < {FIRST_ITEM_TARGET_S} s){scope}")
    for verdict in verdicts:
        print(verdict)


if __name__ == "__main__":
    main()
