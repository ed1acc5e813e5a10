"""Load: N concurrent REST clients starting runs and polling their status for S seconds, against
web processes served as `make run` serves them (uvicorn, WEB_CONCURRENCY processes, each with its
database pool) and a real 2-process Celery worker finishing the runs.

Prints, for the status endpoint (`GET /api/v1/executions/{id}/`), p50/p95/p99 under load next to
the same loop run by a single client in the same session (the baseline), the count of every
answer by status (target: no 5xx), the runs accepted (202) against the runs stored (none lost,
none duplicated), and the most database connections any web process held.

    .venv/bin/python bench/api_load.py [--clients 50] [--seconds 60] [--web-processes 2]

Runs on its own database (imageflow_load), queue and Redis prefixes; the load generator runs
in separate processes (10 client threads each) on the same machine as the server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DATABASE_NAME", "imageflow_load")
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", "imageflow-bench-load")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", "imageflow-bench-load")
os.environ.setdefault("CACHE_KEY_PREFIX", "imageflow-bench-load")
os.environ.setdefault("DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from bench._setup import django_setup, ensure_database, percentile  # noqa: E402

THREADS_PER_PROCESS = 10


def client_loop(base: str, token: str, pipeline_id: str, file_id: str, pause: float, seconds: float, results) -> None:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    answers: list[tuple[str, int, float]] = []
    started: list[str] = []
    deadline = time.monotonic() + seconds

    def call(kind, method, path, **kwargs):
        began = time.perf_counter()
        try:
            response = session.request(method, f"{base}{path}", timeout=60, **kwargs)
        except requests.RequestException:
            answers.append((kind, 0, time.perf_counter() - began))
            return None
        answers.append((kind, response.status_code, time.perf_counter() - began))
        return response

    while time.monotonic() < deadline:
        response = call("start", "POST", f"/api/v1/pipelines/{pipeline_id}/run/", json={"inputs": [file_id]},
                        headers={"Idempotency-Key": uuid.uuid4().hex})
        if response is not None and response.status_code == 202:
            started.append(response.json()["id"])
        for _ in range(3):
            if started and time.monotonic() < deadline:
                time.sleep(pause)  # a client polling every `pause` seconds (0: as fast as answered)
                call("status", "GET", f"/api/v1/executions/{started[-1]}/")
    results.put((answers, started))


def client_process(count: int, args: tuple, results) -> None:
    threads = [threading.Thread(target=client_loop, args=(*args, results)) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_clients(clients: int, args: tuple) -> tuple[list, list]:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    processes = []
    remaining = clients
    while remaining > 0:
        count = min(THREADS_PER_PROCESS, remaining)
        remaining -= count
        process = context.Process(target=client_process, args=(count, args, results))
        process.start()
        processes.append(process)
    answers, started = [], []
    for _ in range(clients):
        client_answers, client_started = results.get(timeout=args[-1] + 300)
        answers += client_answers
        started += client_started
    for process in processes:
        process.join()
    return answers, started


def connections_per_process(pids: set[int], database_port: int) -> dict[int, int]:
    import psutil
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                       "AND client_port IS NOT NULL")
        ports = {row[0] for row in cursor.fetchall()}
    counts = dict.fromkeys(pids, 0)
    for conn in psutil.net_connections(kind="tcp"):
        if conn.pid in pids and conn.laddr and conn.laddr.port in ports and conn.raddr \
                and conn.raddr.port == database_port:
            counts[conn.pid] += 1
    return counts


def cpu_by_role(web_pid: int, worker_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the web processes, the worker processes, PostgreSQL (all of its
    processes: other databases' too) and the whole machine."""
    import psutil

    def tree(pid: int) -> float:
        total = 0.0
        try:
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                times = process.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
        return total

    postgres = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] == "postgres" and process.info["cpu_times"] is not None:
            postgres += process.info["cpu_times"].user + process.info["cpu_times"].system
    machine = psutil.cpu_times()
    return {"web": tree(web_pid), "worker": tree(worker_pid), "postgres": postgres,
            "machine": machine.user + machine.system + machine.nice + getattr(machine, "steal", 0.0)}


def summary(label: str, answers: list) -> str:
    times = [seconds * 1000 for kind, status, seconds in answers if kind == "status" and status == 200]
    if not times:
        return f"{label}: no status answers"
    return (f"{label}: status n={len(times)} p50={percentile(times, 50):.1f} ms p95={percentile(times, 95):.1f} ms "
            f"p99={percentile(times, 99):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--baseline-seconds", type=float, default=15.0)
    parser.add_argument("--web-processes", type=int, default=2)
    parser.add_argument("--port", type=int, default=8097)
    parser.add_argument("--poll-interval", type=float, default=0.0,
                        help="seconds a client waits before each status poll (0: closed loop, no pause)")
    parser.add_argument("--worker-niceness", type=int, default=None,
                        help="WORKER_NICENESS of the worker (default: the setting's, as under `make run`; 0: same "
                             "priority as the web)")
    options = parser.parse_args()

    ensure_database()
    django_setup()
    import psutil
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from rest_framework.authtoken.models import Token

    from executions.models import PipelineExecution
    from executions.catalogue import builtin_components_register
    from executions.demo import demo_image_bytes
    from files.services import file_store_bytes
    from imageflow.accounts.models import User
    from registry.models import Pipeline

    if options.worker_niceness is None:
        options.worker_niceness = settings.WORKER_NICENESS
    call_command("migrate", verbosity=0)
    builtin_components_register()
    user, _ = User.objects.get_or_create(username="load-bench")
    token, _ = Token.objects.get_or_create(user=user)
    pipeline = Pipeline.objects.create(
        name=f"load-{uuid.uuid4().hex[:8]}", created_by=user,
        definition={"nodes": [{"id": "gray", "component": {"name": "grayscale", "version": "1.0.0"}, "parameters": {}}],
                    "edges": []})
    source = file_store_bytes(content=demo_image_bytes(width=320, height=240), original_name="load.jpg",
                              created_by=user, prefix="uploads")
    connection.close()

    env = {**os.environ}
    venv_bin = Path(sys.executable).parent
    logs = ROOT / "var" / "log"
    logs.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [str(venv_bin / "celery"), "-A", "imageflow", "worker", "--concurrency=2", "-Q",
         settings.CELERY_TASK_DEFAULT_QUEUE, "--loglevel=WARNING", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env={**env, "CELERY_DB_REUSE_MAX": "1000", "WORKER_NICENESS": str(options.worker_niceness)},
        stdout=(logs / "bench-load-worker.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    web = subprocess.Popen(
        [str(venv_bin / "uvicorn"), "imageflow.asgi:application", "--host", "127.0.0.1", "--port", str(options.port),
         "--lifespan", "off", "--ws", "websockets-sansio", "--workers", str(options.web_processes), "--no-access-log"],
        cwd=ROOT, env=env, stdout=(logs / "bench-load-web.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{options.port}"
    try:
        import requests

        for _ in range(200):
            try:
                requests.get(f"{base}/api/schema/", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.2)
        time.sleep(3)  # the worker's pool processes
        args = (base, token.key, str(pipeline.pk), str(source.pk), options.poll_interval)
        baseline, baseline_started = run_clients(1, (*args, options.baseline_seconds))
        web_pids = {child.pid for child in psutil.Process(web.pid).children(recursive=True)}
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max([peak[0], *connections_per_process(web_pids, settings.DATABASES["default"]["PORT"]).values()])
                connection.close()
                time.sleep(0.5)

        watcher = threading.Thread(target=watch)
        watcher.start()
        cpu_before = cpu_by_role(web.pid, worker.pid)
        began = time.monotonic()
        answers, started = run_clients(options.clients, (*args, options.seconds))
        elapsed = time.monotonic() - began
        cpu_after = cpu_by_role(web.pid, worker.pid)
        stop.set()
        watcher.join()
        all_started = baseline_started + started
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and PipelineExecution.objects.filter(pk__in=all_started).exclude(
                status__in=["completed", "failed", "cancelled"]).exists():
            time.sleep(1)
        stored = PipelineExecution.objects.filter(pipeline=pipeline).count()
        unfinished = PipelineExecution.objects.filter(pipeline=pipeline).exclude(status="completed").count()
    finally:
        for process in (web, worker):
            os.killpg(process.pid, signal.SIGTERM)
        for process in (web, worker):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    by_status = Counter(status for _, status, _ in answers)
    server_errors = sum(count for status, count in by_status.items() if status >= 500 or status == 0)
    print(f"machine: {os.cpu_count()} cores, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"clients: {options.clients}, each starting a run and polling it 3 times, "
          f"{'without pause' if not options.poll_interval else f'{options.poll_interval:g} s between polls'}")
    print(f"web: {options.web_processes} uvicorn processes, pool max {settings.DATABASE_POOL_MAX_SIZE} each; "
          f"worker: 2 processes at niceness {options.worker_niceness}")
    print(summary("baseline (1 client)", baseline))
    print(summary(f"load ({options.clients} clients)", answers))
    loaded = [s * 1000 for k, st, s in answers if k == "status" and st == 200]
    unloaded = [s * 1000 for k, st, s in baseline if k == "status" and st == 200]
    if loaded and unloaded:
        print(f"p95 ratio load/baseline: {percentile(loaded, 95) / percentile(unloaded, 95):.1f}x "
              f"(target p95 < 250 ms under load)")
    print(f"requests: {len(answers)} in {elapsed:.0f} s ({len(answers) / elapsed:.0f}/s), by status "
          f"{dict(sorted(by_status.items()))}, 5xx or no answer: {server_errors}")
    print(f"runs: {len(all_started)} accepted (202), {stored} stored, {len(set(all_started))} distinct, "
          f"{unfinished} not completed")
    print(f"most database connections held by one web process: {peak[0]}")
    used = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
    others = used["machine"] - used["web"] - used["worker"] - used["postgres"]
    print(f"CPU during the load ({2 * elapsed:.0f} core-seconds available): web {used['web']:.0f} s, worker "
          f"{used['worker']:.0f} s, PostgreSQL {used['postgres']:.0f} s, clients and the rest {others:.0f} s; "
          f"web CPU per request {used['web'] / max(len(answers), 1) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
