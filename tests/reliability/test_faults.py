"""Reliability scenarios 1, 2, 3 and 5: a worker killed, the object store and the search server
stopped, database connections terminated, each injected for real while runs are in flight."""

from __future__ import annotations

import os
import signal
import time

import boto3
import pytest
import requests
from botocore.config import Config
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from executions import logs
from executions.log_models import ExecutionLogRecord
from executions.logstore.documents import alias_name
from executions.logstore.shipping import SearchUnavailable, record_id_of, ship_pending
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepItem, StepStatus
from executions.services import execution_start
from files.models import File
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    wait_for,
    FAST_ENGINE,
    ProcessWorker,
    _purge_queue,
    builtins,
    engine_settings,
    jpeg_file,
    make_jpeg,
    node,
    pipeline_of,
    thread_worker,
    wait_finished,
)
from tests.logs.conftest import search_prefix, separate_search_server  # noqa: F401  (fixtures)
from tests.reliability import report
from tests.reliability.stack import FaultProxy, WebServer

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.django_db(transaction=True)]


def _test_database() -> str:
    return connection.settings_dict["NAME"]


def _bucket_keys() -> set[str]:
    client = boto3.client("s3", endpoint_url=settings.S3_ENDPOINT_URL, region_name=settings.S3_REGION,
                          aws_access_key_id=settings.AWS_ACCESS_KEY_ID,
                          aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY,
                          config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.S3_BUCKET):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


def _outputs_of(step: ComponentExecution) -> int:
    return File.objects.filter(metadata__step_id=str(step.pk)).count()


@pytest.fixture
def worker_factory(engine_settings):
    started: list[ProcessWorker] = []
    _purge_queue()

    def start(**extra_env) -> ProcessWorker:
        worker = ProcessWorker(extra_env={key: str(value) for key, value in extra_env.items()})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    _purge_queue()


# --- 1. SIGKILL of a worker process mid-step ------------------------------------------------------

def test_1_sigkill_of_pool_processes_mid_step_loses_no_run_and_stores_each_output_once(
        worker_factory, builtins, pipeline_of, jpeg_file, user):
    worker = worker_factory()
    pipeline = pipeline_of([node("slow", "passthrough", sleep_seconds=1.5), node("gray", "grayscale")],
                           [{"from": "slow", "to": "gray"}])
    source = jpeg_file()
    started = time.monotonic()
    runs = [execution_start(pipeline=pipeline, inputs=[source.id], user=user) for _ in range(10)]
    # when the pool process running each run's slow step is killed with SIGKILL while it runs
    killed: set = set()
    deadline = time.monotonic() + 120
    while len(killed) < len(runs) and time.monotonic() < deadline:
        for step in ComponentExecution.objects.filter(execution__in=runs, node_id="slow", status=StepStatus.RUNNING):
            pid = int(step.worker.rsplit(":", 1)[1]) if step.worker else None
            if step.execution_id in killed or pid not in worker.child_pids():
                continue
            os.kill(pid, signal.SIGKILL)
            killed.add(step.execution_id)
        if all(PipelineExecution.objects.get(pk=run.pk).status in {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED}
               for run in runs):
            break
        time.sleep(0.05)
    # then every run completes, with each step's output stored exactly once, and nothing is stuck
    for run in runs:
        wait_finished(run, timeout=180)
    elapsed = time.monotonic() - started
    statuses = [run.status for run in runs]
    steps = list(ComponentExecution.objects.filter(execution__in=runs))
    # the slow step passes its input on; the grayscale step after it stores one image per run
    outputs = {step.pk: _outputs_of(step) for step in steps if step.node_id == "gray"}
    assert statuses == [ExecutionStatus.COMPLETED] * 10, [run.error_message for run in runs]
    assert len(killed) >= 5, f"only {len(killed)} slow steps were caught running"
    assert list(outputs.values()) == [1] * 10, outputs
    assert all(len(step.output_data["files"]) == 1 for step in steps)
    assert not ComponentExecution.objects.filter(execution__in=runs, status__in=[StepStatus.PENDING,
                                                                                 StepStatus.RUNNING]).exists()
    # (one image per run: its map steps run as plain steps; SIGKILL mid-item: tests/executions/test_items.py)
    retried = sum(1 for step in steps if step.node_id == "slow" and step.attempts > 1)
    report.record(1, f"10 runs, {len(killed)} pool processes killed with SIGKILL mid-step: "
                     f"{statuses.count(ExecutionStatus.COMPLETED)}/10 completed, {retried} steps run again, "
                     f"{sum(outputs.values())} stored outputs for 10 image steps (each once), 0 stuck, {elapsed:.0f} s")


# --- 2. The object store stopped --------------------------------------------------------------------

@pytest.fixture
def store_proxy():
    host, port = settings.S3_ENDPOINT_URL.split("//", 1)[1].split(":")
    proxy = FaultProxy(host, int(port))
    yield proxy
    proxy.close()


def test_2a_a_run_rides_out_an_object_store_outage_of_60_seconds(
        worker_factory, store_proxy, builtins, pipeline_of, jpeg_file, user):
    # given a worker that reaches the object store through the proxy, with the default retry budget
    worker_factory(S3_ENDPOINT_URL=store_proxy.url, STEP_RETRY_BACKOFF_SECONDS=2.0)
    pipeline = pipeline_of([node("fit", "resize", width=64), node("gray", "grayscale")], [{"from": "fit", "to": "gray"}])
    source = jpeg_file()
    # when the store goes down and a run starts, and the store comes back 60 s later
    store_proxy.down()
    down_at = time.monotonic()
    execution = execution_start(pipeline=pipeline, inputs=[source.id], user=user)
    wait_for(lambda: ComponentExecution.objects.filter(execution=execution, node_id="fit", attempts__gte=2).exists(),
               timeout=30, what="the first step to meet the outage and retry")
    time.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
    store_proxy.up()
    outage = time.monotonic() - down_at
    # then the run completes
    wait_finished(execution, timeout=120)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    fit = execution.steps.get(node_id="fit")
    assert _outputs_of(fit) == 1
    warnings = ExecutionLogRecord.objects.filter(execution=execution, extra__event="step_transient_error").count()
    report.record(2, f"stopped {outage:.0f} s during a run: completed after {fit.attempts} attempts of its first step "
                     f"({warnings} transient-error log lines), outputs stored once")


def test_2d_items_ride_out_an_object_store_outage_and_store_each_output_once(
        worker_factory, store_proxy, builtins, pipeline_of, jpeg_file, user):
    # given a run of 4 images (its map steps run as items) while the store is down for 15 s
    worker_factory(S3_ENDPOINT_URL=store_proxy.url, STEP_RETRY_BACKOFF_SECONDS=1.0, STEP_ITEM_BATCH="1")
    pipeline = pipeline_of([node("fit", "resize", width=64), node("gray", "grayscale")], [{"from": "fit", "to": "gray"}])
    sources = [jpeg_file(160 + i, 120) for i in range(4)]
    store_proxy.down()
    down_at = time.monotonic()
    execution = execution_start(pipeline=pipeline, inputs=[s.id for s in sources], user=user)
    wait_for(lambda: ExecutionLogRecord.objects.filter(execution=execution, extra__event="item_transient_error").exists(),
             timeout=30, what="an item to meet the outage")
    time.sleep(max(0.0, 15 - (time.monotonic() - down_at)))
    store_proxy.up()
    # then every item waits and runs again, the run completes, and each image has one output
    wait_finished(execution, timeout=120)
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {step.node_id: step for step in execution.steps.all()}
    assert steps["fit"].item_count == 4 and steps["fit"].items_completed == 4
    assert [_outputs_of(steps[node_id]) for node_id in ("fit", "gray")] == [4, 4]
    assert len(set(steps["gray"].output_data["files"])) == 4
    retries = ExecutionLogRecord.objects.filter(execution=execution, extra__event="item_transient_error").count()
    # (a transient error does not count as a lost worker: no item used up its attempts)
    assert all(item.attempts == 1 for item in StepItem.objects.filter(execution=execution))
    print(f"items: outage {time.monotonic() - down_at:.0f} s, {retries} transient-error lines, outputs 4 + 4")


def test_2b_an_outage_past_the_retry_budget_fails_the_run_naming_the_object_store(
        worker_factory, store_proxy, builtins, pipeline_of, jpeg_file, user):
    worker_factory(S3_ENDPOINT_URL=store_proxy.url, STEP_TRANSIENT_RETRY_BUDGET_SECONDS=6, STEP_RETRY_BACKOFF_SECONDS=1)
    pipeline = pipeline_of([node("fit", "resize", width=64)])
    source = jpeg_file()
    store_proxy.down()
    execution = wait_finished(execution_start(pipeline=pipeline, inputs=[source.id], user=user), timeout=90)
    store_proxy.up()
    step = execution.steps.get()
    assert execution.status == ExecutionStatus.FAILED
    assert step.error_message.startswith("object store unavailable for ")
    assert "(retry budget 6s); gave up: " in step.error_message
    report.record(2, f"stopped past a budget of 6 s: failed after {step.attempts} attempts, "
                     f"\"{step.error_message.split(': ', 1)[0]}: ...\"")


def test_2c_an_upload_while_the_object_store_is_down_is_a_503_with_no_row_and_no_object(store_proxy, user):
    token = Token.objects.create(user=user).key
    web = WebServer(database=_test_database(), env={"S3_ENDPOINT_URL": store_proxy.url})
    try:
        files_before, keys_before = File.objects.count(), _bucket_keys()
        store_proxy.down()
        answers = []
        for size in ((320, 240), (2400, 1800)):  # one held in memory, one spooled and streamed
            response = requests.post(f"{web.base}/api/v1/files/", headers={"Authorization": f"Token {token}"},
                                     files={"file": ("photo.jpg", make_jpeg(*size), "image/jpeg")}, timeout=120)
            answers.append(response)
        store_proxy.up()
        assert [r.status_code for r in answers] == [503, 503], [r.text[:300] for r in answers]
        assert all(r.headers.get("Retry-After") for r in answers)
        assert answers[0].json()["type"] == "service_unavailable" and answers[0].json()["service"] == "object_store"
        assert File.objects.count() == files_before
        assert _bucket_keys() == keys_before
        # and once the store is back the same upload is stored
        response = requests.post(f"{web.base}/api/v1/files/", headers={"Authorization": f"Token {token}"},
                                 files={"file": ("photo.jpg", make_jpeg(), "image/jpeg")}, timeout=60)
        assert response.status_code == 201, response.text
    finally:
        web.stop()
    report.record(2, f"stopped during {len(answers)} uploads: {', '.join(str(r.status_code) for r in answers)} with "
                     f"Retry-After {answers[0].headers['Retry-After']} s, 0 rows, 0 objects; 201 once back")


# --- 3. The search server stopped -------------------------------------------------------------------

def test_3_records_logged_while_search_is_down_are_all_searchable_once_after_it_returns(
        separate_search_server, search_prefix, thread_worker, builtins, pipeline_of, jpeg_file, user):
    from executions.logstore.tasks import ship_logs
    from imageflow.search import get_client

    separate_search_server.stop()
    pipeline = pipeline_of([node("fit", "resize", width=64), node("gray", "grayscale")], [{"from": "fit", "to": "gray"}])
    runs = [wait_finished(execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)) for _ in range(4)]
    assert [run.status for run in runs] == [ExecutionStatus.COMPLETED] * 4
    # the steps' own output lines bring the runs' records to 1,000
    steps = list(ComponentExecution.objects.filter(execution__in=runs))
    rows = ExecutionLogRecord.objects.filter(execution__in=runs)
    missing = 1000 - rows.count()
    for index, step in enumerate(steps):
        share = missing // len(steps) + (1 if index < missing % len(steps) else 0)
        logs.emit_lines(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, component="pillow",
                        lines=[f"line {n} of step {step.node_id}" for n in range(share)], level="info", stream="stdout")
    assert rows.count() == 1000
    # while the server is down the shipper keeps everything
    assert ship_logs.apply_async(ignore_result=False).get(timeout=60) == 0
    with pytest.raises(SearchUnavailable):
        ship_pending()
    assert rows.filter(shipped_at__isnull=True).count() == 1000
    # when it returns, the periodic shipper (on the worker) sends everything
    separate_search_server.start()
    for _ in range(10):
        ship_logs.apply_async(ignore_result=False).get(timeout=120)
        if not rows.filter(shipped_at__isnull=True).exists():
            break
    ship_logs.apply_async(ignore_result=False).get(timeout=60)  # a further run sends nothing twice
    es = get_client()
    es.indices.refresh(index=alias_name())
    query = {"terms": {"execution_id": [str(run.pk) for run in runs]}}
    hits = es.search(index=alias_name(), query=query, size=2000)["hits"]
    ids = [record_id_of(hit["_id"]) for hit in hits["hits"]]
    assert hits["total"]["value"] == 1000 and len(ids) == 1000 and len(set(ids)) == 1000
    assert set(ids) == set(rows.values_list("id", flat=True))
    report.record(3, f"stopped while 4 runs logged 1,000 records: 0 shipped while down, "
                     f"{len(set(ids))}/1,000 searchable after it returned, none twice")


# --- 5. Database connections terminated ---------------------------------------------------------------

def _terminate_other_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0]


def test_5_terminated_database_connections_under_the_worker_and_the_web_process(
        worker_factory, builtins, pipeline_of, jpeg_file, user):
    worker_factory()
    token = Token.objects.create(user=user).key
    web = WebServer(database=_test_database())
    headers = {"Authorization": f"Token {token}"}
    try:
        assert requests.get(f"{web.base}/api/v1/pipelines/", headers=headers, timeout=10).status_code == 200
        pipeline = pipeline_of([node("slow", "passthrough", sleep_seconds=2), node("gray", "grayscale")],
                               [{"from": "slow", "to": "gray"}])
        execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
        wait_for(lambda: execution.steps.filter(node_id="slow", status=StepStatus.RUNNING).exists(), timeout=30,
                   what="the slow step to run")
        # when every other session of the database is terminated (the worker's and the web's)
        terminated = _terminate_other_sessions()
        cut_at = time.monotonic()
        # then the web process answers again by itself
        answers = []
        while time.monotonic() - cut_at < 10:
            status = requests.get(f"{web.base}/api/v1/pipelines/", headers=headers, timeout=10).status_code
            answers.append(status)
            if status == 200:
                break
            time.sleep(0.1)
        back_in = time.monotonic() - cut_at
        # and the run is not left stuck: its step is retried and the run completes
        wait_finished(execution, timeout=120)
    finally:
        web.stop()
    assert answers[-1] == 200 and 500 not in answers, answers
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    steps = {step.node_id: step for step in execution.steps.all()}
    assert len(steps["slow"].output_data["files"]) == 1 and _outputs_of(steps["gray"]) == 1
    slow_attempts = max(StepItem.objects.filter(step=steps["slow"]).values_list("attempts", flat=True),
                        default=steps["slow"].attempts)
    report.record(5, f"{terminated} sessions terminated mid-step: web back to 200 in {back_in:.1f} s "
                     f"({len(answers) - 1} non-200 answers first, none 500); the run completed "
                     f"(slow item attempts {slow_attempts}), outputs once")


def test_5_the_database_unreachable_is_a_503_for_the_api_and_the_admin_and_the_web_recovers_by_itself(user, staff_user):
    from django.test import Client

    token = Token.objects.create(user=user).key
    browser = Client()
    browser.force_login(staff_user)
    staff_cookies = {settings.SESSION_COOKIE_NAME: browser.cookies[settings.SESSION_COOKIE_NAME].value}
    proxy = FaultProxy(connection.settings_dict["HOST"], int(connection.settings_dict["PORT"]))
    web = WebServer(database=_test_database(), env={"DATABASE_PORT": str(proxy.port), "DATABASE_POOL_TIMEOUT_SECONDS": "3"})
    headers = {"Authorization": f"Token {token}"}
    try:
        assert requests.get(f"{web.base}/api/v1/pipelines/", headers=headers, timeout=10).status_code == 200
        assert requests.get(f"{web.base}/admin/", cookies=staff_cookies, timeout=10).status_code == 200
        # when the database cannot be reached at all
        proxy.down()
        api = requests.get(f"{web.base}/api/v1/pipelines/", headers=headers, timeout=30)
        admin = requests.get(f"{web.base}/admin/", cookies=staff_cookies, timeout=30)
        write = requests.post(f"{web.base}/api/v1/pipelines/", headers=headers, timeout=30,
                              json={"name": "during the outage", "definition": {"nodes": [], "edges": []}})
        # then every answer is a 503 with Retry-After, in the API's error shape under /api/
        assert (api.status_code, admin.status_code, write.status_code) == (503, 503, 503), (api.text, admin.text)
        assert api.json()["service"] == "database" and api.headers["Retry-After"] == "5"
        assert admin.headers["Retry-After"] == "5" and "database is unavailable" in admin.text
        # and when it is back, the same process answers 200 by itself
        proxy.up()
        back = wait_for(lambda: requests.get(f"{web.base}/api/v1/pipelines/", headers=headers,
                                               timeout=30).status_code == 200, timeout=15, what="200 again")
    finally:
        web.stop()
        proxy.close()
    assert back
    report.record(5, "database unreachable: API read, API write and admin page 503 with Retry-After 5 s "
                     "(after the 3 s pool wait), 200 again once it returned, without a restart")
