"""Three hosts on this machine: Linux network namespaces with their own addresses, a web on one and
a Celery worker on each of the two others, sharing the test database, Redis, the object store and
the search server through forwarders on the root side of each host's veth link.

1. One run of many independent branches over several images: both worker hosts run part of it
   (the steps' `worker` column names the host), every output is stored exactly once.
2. A worker host is cut off mid-run (its veth link set down; the worker keeps running and reaches
   nothing): the other host takes its steps over after the heartbeat timeout, the run completes,
   nothing is done twice, and once the link is back the cut-off worker's late results are refused.
3. The web host is stopped while a run it started is in progress: the run finishes, and its logs
   are searchable through the web when it returns.

Only namespaces, links and addresses of this test's own (unique names per run, 10.147.x.0/30
subnets checked unused) are made, and all are removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings
from django.db import connection
from rest_framework.authtoken.models import Token

from executions.log_models import ExecutionLogRecord
from executions.models import ComponentExecution, ExecutionStatus, PipelineExecution, StepItem, StepStatus
from executions.services import execution_start
from files.models import File
from tests.executions.conftest import _purge_queue, builtins, jpeg_file, node, pipeline_of  # noqa: F401
from tests.reliability.stack import ROOT, FaultProxy, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.worker, pytest.mark.timeout(900), pytest.mark.django_db(transaction=True)]

VENV_BIN = Path(sys.executable).parent
HEARTBEAT_TIMEOUT = 5.0
ENGINE_ENV = {"STEP_HEARTBEAT_SECONDS": "0.5", "STEP_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
              "STEP_RETRY_BACKOFF_SECONDS": "0.5", "STEP_RETRY_BACKOFF_MAX_SECONDS": "2",
              "EXECUTION_SWEEP_INTERVAL_SECONDS": "2", "LOG_SHIP_INTERVAL_SECONDS": "1", "CELERY_DB_REUSE_MAX": "1000",
              "DEBUG": "false"}
BRANCHES = 8
IMAGES = 4


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _with_netloc(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, parts.fragment))


class Host:
    """A network namespace joined to the root namespace by a veth pair on its own /30."""

    def __init__(self, *, label: str, run: str, octet: int, index: int) -> None:
        self.label = label
        self.hostname = f"{label}-{run}"
        self.namespace = f"if14-{label}-{run}"
        self.root_link = f"v{run}{index}r"  # at most 15 characters
        self.root_address = f"10.147.{octet}.1"
        self.address = f"10.147.{octet}.2"
        self.forwarders: dict[str, FaultProxy] = {}
        self.processes: list[subprocess.Popen] = []
        ip("netns", "add", self.namespace)
        peer = f"v{run}{index}n"
        ip("link", "add", self.root_link, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", self.namespace)
        ip("addr", "add", f"{self.root_address}/30", "dev", self.root_link)
        ip("link", "set", self.root_link, "up")
        ip("netns", "exec", self.namespace, "ip", "addr", "add", f"{self.address}/30", "dev", peer)
        ip("netns", "exec", self.namespace, "ip", "link", "set", peer, "up")
        ip("netns", "exec", self.namespace, "ip", "link", "set", "lo", "up")
        # The shared services listen on 127.0.0.1: a forwarder per service on this link's root side.
        database = connection.settings_dict
        s3, search = urlsplit(settings.S3_ENDPOINT_URL), urlsplit(settings.ELASTICSEARCH_URL)
        redis_url = urlsplit(settings.REDIS_URL)
        for name, host, port in (("database", database["HOST"], int(database["PORT"])),
                                 ("redis", redis_url.hostname, redis_url.port or 6379),
                                 ("s3", s3.hostname, s3.port), ("search", search.hostname, search.port)):
            self.forwarders[name] = FaultProxy(host, port, listen_host=self.root_address)

    def environment(self) -> dict[str, str]:
        f = self.forwarders
        redis_port = f["redis"].port
        return {
            **os.environ, **ENGINE_ENV,
            "DATABASE_NAME": connection.settings_dict["NAME"], "DATABASE_HOST": self.root_address,
            "DATABASE_PORT": str(f["database"].port),
            "REDIS_URL": _with_netloc(settings.REDIS_URL, self.root_address, redis_port),
            "CELERY_BROKER_URL": _with_netloc(settings.CELERY_BROKER_URL, self.root_address, redis_port),
            "CELERY_RESULT_BACKEND": _with_netloc(settings.CELERY_RESULT_BACKEND, self.root_address, redis_port),
            "CHANNEL_LAYER_REDIS_URL": _with_netloc(settings.CHANNEL_LAYER_REDIS_URL, self.root_address, redis_port),
            "S3_ENDPOINT_URL": f"http://{self.root_address}:{f['s3'].port}",
            "ELASTICSEARCH_URL": f"http://{self.root_address}:{f['search'].port}",
            "ELASTICSEARCH_INDEX_PREFIX": settings.ELASTICSEARCH_INDEX_PREFIX,
        }

    def start(self, command: list[str], *, log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`command` in this namespace, with a UTS namespace of its own so its host name is this host's
        (the engine records host:pid in the step's `worker` column)."""
        log_path = ROOT / "var" / "log" / f"multihost-{self.hostname}-{log_name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        script = f"hostname {self.hostname} && exec " + " ".join(f"'{part}'" for part in command)
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c", script],
            cwd=ROOT, env={**self.environment(), **(env or {})}, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        process.log_path = log_path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def link(self, up: bool) -> None:
        ip("link", "set", self.root_link, "up" if up else "down")

    def teardown(self) -> None:
        for process in self.processes:
            stop(process)
        for forwarder in self.forwarders.values():
            forwarder.close()
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.root_link], capture_output=True, timeout=30)  # gone with the netns


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=10)


def unused_octets(count: int) -> list[int]:
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout + \
        subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    candidates = [octet for octet in range(100, 250) if f"10.147.{octet}." not in used]
    return random.sample(candidates, count)


def start_worker(host: Host, *, beat: bool = False) -> subprocess.Popen:
    command = [str(VENV_BIN / "celery"), "-A", "imageflow", "worker", "--concurrency=2", "--pool=prefork",
               "-Q", settings.CELERY_TASK_DEFAULT_QUEUE, "-n", f"w@{host.hostname}", "--loglevel=INFO",
               "--without-mingle", "--without-gossip"]
    if beat:
        command += ["--beat", f"--schedule=/tmp/multihost-beat-{host.hostname}"]
    process = host.start(command, log_name="worker")
    wait_until(lambda: process.poll() is None and b" ready." in process.log_path.read_bytes(), timeout=60,
               what=f"worker on {host.hostname} ready")
    return process


def start_web(host: Host) -> subprocess.Popen:
    process = host.start([str(VENV_BIN / "uvicorn"), "imageflow.asgi:application", "--host", host.address,
                          "--port", "8000", "--workers", "2", "--lifespan", "off", "--no-access-log"],
                         log_name="web", env={"ALLOWED_HOSTS": host.address})

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(process.log_path.read_text()[-2000:])
        try:
            return requests.get(f"http://{host.address}:8000/readyz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(answers, timeout=60, what="web answering")
    return process


@pytest.fixture
def hosts():
    run = uuid.uuid4().hex[:5]
    made: dict[str, Host] = {}
    try:
        for index, (label, octet) in enumerate(zip(("web", "wa", "wb"), unused_octets(3))):
            made[label] = Host(label=label, run=run, octet=octet, index=index)
        yield made
    finally:
        for host in made.values():
            host.teardown()
        leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"-{run}" not in leftovers


def branches_pipeline(pipeline_of, *, sleep: float):
    nodes, edges = [], []
    for i in range(BRANCHES):
        nodes += [node(f"slow{i}", "passthrough", sleep_seconds=sleep), node(f"gray{i}", "grayscale")]
        edges.append({"from": f"slow{i}", "to": f"gray{i}"})
    return pipeline_of(nodes, edges)


def outputs_of(step: ComponentExecution) -> int:
    return File.objects.filter(metadata__step_id=str(step.pk)).count()


def wait_finished(execution_id, timeout: float) -> PipelineExecution:
    def finished():
        execution = PipelineExecution.objects.get(pk=execution_id)
        return execution if execution.status in {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED} else None

    return wait_until(finished, timeout=timeout, interval=0.5, what="run finished")


def host_of(unit: ComponentExecution | StepItem) -> str:
    return unit.worker.rsplit(":", 1)[0]


def assert_each_output_once(execution: PipelineExecution) -> int:
    steps = list(execution.steps.all())
    assert all(step.status == StepStatus.COMPLETED for step in steps)
    gray = [step for step in steps if step.node_id.startswith("gray")]
    assert [outputs_of(step) for step in gray] == [IMAGES] * BRANCHES
    assert sorted(len(step.output_data["files"]) for step in gray) == [IMAGES] * BRANCHES
    stored = File.objects.filter(metadata__step_id__in=[str(step.pk) for step in steps]).count()
    assert stored == BRANCHES * IMAGES
    return stored


def test_web_and_two_worker_hosts_share_runs_survive_a_cut_off_host_and_a_stopped_web(
        hosts, builtins, pipeline_of, jpeg_file, user):
    _purge_queue()
    web_host, host_a, host_b = hosts["web"], hosts["wa"], hosts["wb"]
    web = start_web(web_host)
    start_worker(host_a)
    start_worker(host_b, beat=True)  # beat (sweep, log shipping) on the host that is never cut off
    token = Token.objects.create(user=user).key
    api = f"http://{web_host.address}:8000/api/v1"
    auth = {"Authorization": f"Token {token}"}
    images = [str(jpeg_file(64 + i, 48).pk) for i in range(IMAGES)]
    figures: dict[str, object] = {}

    # 1. one run through the web host's API, spread over both worker hosts
    pipeline = branches_pipeline(pipeline_of, sleep=1.0)
    started = time.monotonic()
    response = requests.post(f"{api}/pipelines/{pipeline.pk}/run/", json={"inputs": images}, headers=auth, timeout=30)
    assert response.status_code == 202, response.text
    execution = wait_finished(response.json()["id"], timeout=240)
    assert execution.status == ExecutionStatus.COMPLETED
    # (map steps run as items: the items of one run are what the hosts share)
    items = list(StepItem.objects.filter(execution=execution))
    per_host = Counter(host_of(item) for item in items)
    assert set(per_host) == {host_a.hostname, host_b.hostname}, per_host
    assert all(count > 0 for count in per_host.values())
    assert all(item.attempts == 1 for item in items)
    stored = assert_each_output_once(execution)
    figures["1. items per host"] = dict(per_host)
    figures["1. outputs stored"] = stored
    figures["1. run seconds"] = round(time.monotonic() - started, 1)

    # 2. cut host A off while it runs steps of a run
    execution = execution_start(pipeline=branches_pipeline(pipeline_of, sleep=4.0), inputs=images, user=user)
    on_a = wait_until(lambda: list(StepItem.objects.filter(
        execution=execution, status=StepStatus.RUNNING, worker__startswith=host_a.hostname + ":")),
        timeout=120, interval=0.1, what="an item running on host A")
    host_a.link(up=False)
    cut_at = time.monotonic()
    cut_items = {item.pk for item in on_a}
    cut_steps = {item.step_id for item in on_a}
    try:
        execution = wait_finished(execution.pk, timeout=300)
        completed_after = time.monotonic() - cut_at
        assert execution.status == ExecutionStatus.COMPLETED
        taken_over = StepItem.objects.filter(pk__in=cut_items)
        assert all(host_of(item) == host_b.hostname and item.attempts >= 2 for item in taken_over)
        stored = assert_each_output_once(execution)
    finally:
        host_a.link(up=True)
    # Back online, host A finishes what it was doing; the engine's guarded completion refuses it.
    discarded = wait_until(lambda: list(ExecutionLogRecord.objects.filter(
        execution=execution, step_id__in=cut_steps, extra__event="item_result_discarded")),
        timeout=240, interval=1, what="host A's late results refused")
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED
    assert assert_each_output_once(execution) == stored
    figures["2. items running on A when cut"] = len(cut_items)
    figures["2. seconds from cut to run completed"] = round(completed_after, 1)
    figures["2. heartbeat timeout (s)"] = HEARTBEAT_TIMEOUT
    figures["2. late results refused"] = len(discarded)
    figures["2. items per host"] = dict(Counter(host_of(item) for item in StepItem.objects.filter(execution=execution)))

    # 3. stop the web host while a run it started is in progress
    response = requests.post(f"{api}/pipelines/{branches_pipeline(pipeline_of, sleep=2.0).pk}/run/",
                             json={"inputs": images}, headers={**auth, "X-Request-ID": "multihost-web-down"},
                             timeout=30)
    assert response.status_code == 202
    run_id = response.json()["id"]
    stop(web)
    assert PipelineExecution.objects.get(pk=run_id).status in {ExecutionStatus.PENDING, ExecutionStatus.RUNNING}
    execution = wait_finished(run_id, timeout=240)
    assert execution.status == ExecutionStatus.COMPLETED
    assert_each_output_once(execution)
    records = ExecutionLogRecord.objects.filter(execution=execution).count()
    start_web(web_host)

    last: dict = {}

    def searchable():
        last["body"] = requests.get(f"{api}/executions/{run_id}/logs/", params={"page_size": 500}, headers=auth,
                                    timeout=10).json()
        last["unshipped"] = ExecutionLogRecord.objects.filter(execution_id=run_id, shipped_at__isnull=True).count()
        # (a delivery that arrives after the run's end may still log a line: count what is stored now)
        last["records"] = ExecutionLogRecord.objects.filter(execution_id=run_id).count()
        body = last["body"]
        return body if (body.get("source") == "search" and body.get("count") == last["records"] >= records
                        and not last["unshipped"]) else None

    try:
        body = wait_until(searchable, timeout=120, interval=1, what="the run's logs searchable")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {records} records, {last.get('unshipped')} unshipped, "
                             f"last answer {str(last.get('body'))[:600]}") from None
    assert any(result["message"].startswith("execution created") for result in body["results"])
    assert all(result.get("extra", {}).get("request_id") == "multihost-web-down" for result in body["results"]
               if "extra" in result)
    figures["3. log records searchable after the web returned"] = body["count"]
    (ROOT / "var" / "log" / "multihost-figures.json").write_text(json.dumps(figures, indent=2))
    print("multi-host figures:", json.dumps(figures))
