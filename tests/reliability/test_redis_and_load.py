"""Reliability scenarios 4 and 6: Redis stopped while clients start and read runs, and 50
concurrent clients (plus 200 concurrent cancels of one run) against web processes served as
`make run` serves them, with a real worker finishing the runs."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token

from executions.models import ExecutionStatus, PipelineExecution, StepStatus
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    wait_for,
    ProcessWorker,
    _purge_queue,
    builtins,
    engine_settings,
    jpeg_file,
    node,
    pipeline_of,
)
from tests.reliability import report
from tests.reliability.stack import RedisServer, WebServer, percentile

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.django_db(transaction=True)]

FINISHED = {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}


def _database() -> str:
    return connection.settings_dict["NAME"]


class Client:
    """A REST client that records every answer: (kind, status, seconds)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.answers: list[tuple[str, int, float]] = []
        self.started: list[str] = []

    def call(self, kind: str, method: str, path: str, **kwargs) -> requests.Response | None:
        began = time.perf_counter()
        try:
            response = self.session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        except requests.RequestException:
            self.answers.append((kind, 0, time.perf_counter() - began))
            return None
        self.answers.append((kind, response.status_code, time.perf_counter() - began))
        return response

    def start_run(self, pipeline_id, file_id) -> None:
        response = self.call("start", "POST", f"/api/v1/pipelines/{pipeline_id}/run/",
                             json={"inputs": [str(file_id)]}, headers={"Idempotency-Key": uuid.uuid4().hex})
        if response is not None and response.status_code == 202:
            self.started.append(response.json()["id"])


def _statuses(clients: list[Client], kind: str) -> Counter:
    return Counter(status for client in clients for k, status, _ in client.answers if k == kind)


def _wait_all_finished(ids: list[str], timeout: float) -> float:
    began = time.monotonic()
    wait_for(lambda: PipelineExecution.objects.filter(pk__in=ids).exclude(status__in=FINISHED).count() == 0,
               timeout=timeout, interval=0.5, what=f"{len(ids)} runs to finish")
    return time.monotonic() - began


# --- 4. Redis stopped -------------------------------------------------------------------------------

def test_4_redis_stopped_for_15_seconds_loses_no_run_and_duplicates_none(
        builtins, pipeline_of, jpeg_file, user, engine_settings, tmp_path):
    redis = RedisServer()
    redis.start()
    env = {"REDIS_URL": redis.url(0), "CELERY_BROKER_URL": redis.url(1), "CELERY_RESULT_BACKEND": redis.url(1),
           "CHANNEL_LAYER_REDIS_URL": redis.url(2), "EXECUTION_SWEEP_INTERVAL_SECONDS": "2"}
    worker = ProcessWorker(extra_env=env, extra_args=["--beat", f"--schedule={tmp_path / 'beat-schedule'}"])
    web = WebServer(database=_database(), env=env)
    token = Token.objects.create(user=user).key
    pipeline = pipeline_of([node("fit", "resize", width=48), node("gray", "grayscale")], [{"from": "fit", "to": "gray"}])
    source = jpeg_file()
    writers = [Client(web.base, token) for _ in range(3)]
    readers = [Client(web.base, token) for _ in range(3)]
    stop = threading.Event()

    def write(client: Client) -> None:
        while not stop.is_set():
            client.start_run(pipeline.pk, source.pk)
            time.sleep(0.2)

    def read(client: Client) -> None:
        while not stop.is_set():
            started = [run for writer in writers for run in writer.started[-3:]]
            if started:
                client.call("read", "GET", f"/api/v1/executions/{started[-1]}/")
                # the progress snapshot lives in Redis: 200, or 503 while Redis is down
                client.call("events", "GET", f"/api/v1/executions/{started[-1]}/events/")
            client.call("read", "GET", "/api/v1/pipelines/")
            client.call("read", "GET", "/api/v1/executions/?limit=5")
            time.sleep(0.1)

    threads = [threading.Thread(target=write, args=(c,)) for c in writers]
    threads += [threading.Thread(target=read, args=(c,)) for c in readers]
    try:
        for thread in threads:
            thread.start()
        time.sleep(5)
        redis.stop()  # SIGKILL: the broker's queue and every unacknowledged message go with it
        down_at, down_since = time.monotonic(), timezone.now()
        time.sleep(15)
        up_since = timezone.now()
        redis.start()
        outage = time.monotonic() - down_at
        time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        started = [run for writer in writers for run in writer.started]
        settle = _wait_all_finished(started, timeout=120)
    finally:
        stop.set()
        web.stop()
        worker.stop()
        redis.stop()
    writes, reads, events = _statuses(writers, "start"), _statuses(readers, "read"), _statuses(readers, "events")
    runs = PipelineExecution.objects.filter(pipeline=pipeline)
    # then every write was a 202 or a 503, every read answered, and every 202 is exactly one run, completed
    assert set(writes) <= {202, 503}, writes
    assert set(reads) == {200}, reads
    assert set(events) == {200, 503}, events
    assert sorted(str(pk) for pk in runs.values_list("pk", flat=True)) == sorted(started)
    assert len(set(started)) == len(started)
    assert set(runs.values_list("status", flat=True)) == {ExecutionStatus.COMPLETED}
    assert not runs.filter(steps__status=StepStatus.PENDING).exists()
    # runs committed while the broker was down were accepted (202), and sent later by the sweep
    during = runs.filter(created_at__gte=down_since, created_at__lt=up_since).count()
    assert during > 0
    report.record(4, f"stopped (SIGKILL) {outage:.0f} s while 3 clients started runs and 3 read: writes "
                     f"{dict(sorted(writes.items()))}, reads {dict(sorted(reads.items()))}, progress snapshots "
                     f"{dict(sorted(events.items()))}; {len(started)} runs accepted, "
                     f"{runs.count()} stored (0 lost, 0 duplicated; {during} of them accepted while the broker was down), all completed {settle:.0f} s after the last write "
                     f"(sweep every 2 s), 0 pending")


# --- 6. Load --------------------------------------------------------------------------------------

@pytest.fixture
def web_and_worker(builtins, engine_settings):
    _purge_queue()
    worker = ProcessWorker()
    web = WebServer(database=_database(), workers=2)
    yield web
    web.stop()
    worker.stop()
    _purge_queue()


def _connections_per_web_process(web: WebServer) -> dict[int, int]:
    """Database sessions held by each uvicorn worker process: PostgreSQL's view of its clients'
    ports, matched to the processes that own those ports here."""
    import psutil

    with connection.cursor() as cursor:
        cursor.execute("SELECT client_port FROM pg_stat_activity WHERE datname = current_database() "
                       "AND client_port IS NOT NULL")
        ports = {row[0] for row in cursor.fetchall()}
    web_pids = {child.pid for child in psutil.Process(web.process.pid).children(recursive=True)}
    counts = {pid: 0 for pid in web_pids}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.pid in web_pids and conn.laddr and conn.laddr.port in ports and conn.raddr \
                and conn.raddr.port == connection.settings_dict["PORT"]:
            counts[conn.pid] += 1
    return counts


def test_6_fifty_clients_starting_and_polling_runs_get_no_5xx_and_lose_no_run(
        web_and_worker, pipeline_of, jpeg_file, user):
    web = web_and_worker
    token = Token.objects.create(user=user).key
    pipeline = pipeline_of([node("gray", "grayscale")])
    source = jpeg_file(64, 48)
    clients = [Client(web.base, token) for _ in range(50)]
    stop = threading.Event()
    peak_connections = [0]

    def work(client: Client) -> None:
        while not stop.is_set():
            client.start_run(pipeline.pk, source.pk)
            for _ in range(3):
                if stop.is_set() or not client.started:
                    break
                client.call("status", "GET", f"/api/v1/executions/{client.started[-1]}/")

    def watch_connections() -> None:
        while not stop.is_set():
            peak_connections[0] = max([peak_connections[0], *_connections_per_web_process(web).values()])
            time.sleep(0.5)

    duration = 20.0
    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    threads.append(threading.Thread(target=watch_connections))
    for thread in threads:
        thread.start()
    time.sleep(duration)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    started = [run for client in clients for run in client.started]
    _wait_all_finished(started, timeout=240)
    answers = [answer for client in clients for answer in client.answers]
    by_status = Counter(status for _, status, _ in answers)
    status_times = [seconds for kind, status, seconds in answers if kind == "status" and status == 200]
    runs = PipelineExecution.objects.filter(pipeline=pipeline)
    assert not [status for status in by_status if status >= 500 or status == 0], by_status
    assert sorted(str(pk) for pk in runs.values_list("pk", flat=True)) == sorted(started)
    assert len(set(started)) == len(started)
    assert set(runs.values_list("status", flat=True)) == {ExecutionStatus.COMPLETED}
    # and no web process ever held more connections than its pool
    assert 0 < peak_connections[0] <= settings.DATABASE_POOL_MAX_SIZE, peak_connections
    report.record(6, f"50 clients for {duration:.0f} s on 2 web processes: {len(answers)} requests, "
                     f"{dict(sorted(by_status.items()))}, 0 5xx; {len(started)} runs accepted = stored, none lost "
                     f"or duplicated; status p50 {percentile(status_times, 0.5) * 1000:.0f} ms, p95 "
                     f"{percentile(status_times, 0.95) * 1000:.0f} ms (clients on the same 2 cores; see bench/api_load.py); "
                     f"at most {peak_connections[0]} database connections per web process (pool of "
                     f"{settings.DATABASE_POOL_MAX_SIZE})")


def test_6_two_hundred_concurrent_cancels_of_one_run_answer_one_200_and_199_409(
        web_and_worker, pipeline_of, jpeg_file, user):
    web = web_and_worker
    token = Token.objects.create(user=user).key
    pipeline = pipeline_of([node("slow", "passthrough", sleep_seconds=30)])
    client = Client(web.base, token)
    client.start_run(pipeline.pk, jpeg_file().pk)
    run_id = client.started[0]
    barrier = threading.Barrier(200)

    def cancel(_):
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        barrier.wait()
        try:
            return session.post(f"{web.base}/api/v1/executions/{run_id}/cancel/", timeout=60).status_code
        except requests.RequestException:
            return 0

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = Counter(pool.map(cancel, range(200)))
    assert statuses == Counter({200: 1, 409: 199}), statuses
    assert PipelineExecution.objects.get(pk=run_id).status == ExecutionStatus.CANCELLED
    report.record(6, f"200 concurrent cancels of one run: {dict(sorted(statuses.items()))}")
