"""The engine's hot-path statements (executions.engine.statements) and the worker's database sessions:
the claim, the completion with its children count-down, their progress counts, prepared
statements, asynchronous commits in worker sessions, and the debounced log shipping request."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django.utils import timezone

from executions import logs
from executions.engine import statements
from executions.engine.lifecycle import step_complete
from executions.log_models import ExecutionLogRecord
from executions.logstore.tasks import SHIP_SOON_KEY, ship_soon
from executions.models import ComponentExecution, ExecutionStatus, FileLineage, PipelineExecution, StepStatus
from executions.services import execution_retry, execution_start
from executions.worker import configure_worker_sessions
from tests.executions.conftest import node

DIAMOND_NODES = [node("resize", "resize", width=100), node("gray", "grayscale"), node("blur", "blur"),
                 node("board", "side_by_side")]
DIAMOND_EDGES = [{"from": "resize", "to": "gray"}, {"from": "resize", "to": "blur"},
                 {"from": "gray", "to": "board"}, {"from": "blur", "to": "board"}]


def claim(step: ComponentExecution, worker: str = "test:1") -> statements.Claim | None:
    return statements.claim_step(step_id=step.pk, now=timezone.now(), worker=worker)


def complete(claimed: statements.Claim, files: list[str] | None = None):
    step = claimed.fetched.step
    line = logs.build(execution_id=step.execution_id, step_id=step.pk, node_id=step.node_id, level="info",
                      message=f"step {step.node_id} completed")
    return statements.complete_step(step=step, attempt=step.attempts, now=timezone.now(), inputs=[],
                                    output_data={"files": files or []}, execution_time_ms=1, resource_usage={},
                                    line=line)


@pytest.fixture(autouse=True)
def _step_level(settings):
    # These are the statements of the step-level path (merge steps; every step with items off).
    settings.STEP_ITEMS_ENABLED = False


@pytest.fixture
def diamond(builtins, pipeline_of):
    return pipeline_of(DIAMOND_NODES, DIAMOND_EDGES)


def steps_of(execution: PipelineExecution) -> dict[str, ComponentExecution]:
    return {step.node_id: step for step in execution.steps.all()}


def test_start_counts_each_steps_parents(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    assert {s.node_id: s.waiting_parents for s in execution.steps.all()} == {
        "resize": 0, "gray": 1, "blur": 1, "board": 2}


def test_a_claim_takes_a_ready_step_once_and_brings_what_it_needs(diamond, user):
    # given a new run
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    steps = steps_of(execution)
    # when its root is claimed
    claimed = claim(steps["resize"], worker="host:42")
    # then the claim moved the step and the run to running, with their log lines
    step = claimed.fetched.step
    assert (step.status, step.attempts, step.worker) == (StepStatus.RUNNING, 1, "host:42")
    assert str(step.component) == "resize:1.0.0" and step.component.runner == "builtin"
    assert step.execution.created_by_id == user.pk and claimed.run_started is True
    assert (claimed.counts.total_steps, claimed.counts.finished_steps) == (4, 0)
    execution.refresh_from_db()
    steps["resize"].refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING and execution.started_at is not None
    assert steps["resize"].status == StepStatus.RUNNING and steps["resize"].heartbeat_at is not None
    lines = list(ExecutionLogRecord.objects.filter(execution=execution).order_by("id").values_list(
        "step_id", "message", "extra"))
    # (the run's start logged before its first step's, after the "created" line)
    assert lines[-2:] == [
        (None, "execution pending -> running",
         {"event": "execution_status", "status": "running", "previous_status": "pending"}),
        (step.pk, "step resize started (attempt 1) on host:42", {"event": "step_started", "attempt": 1}),
    ]
    # and a second delivery cannot claim it again
    assert claim(steps["resize"]) is None
    # and a step whose parent has not completed cannot be claimed
    assert claim(steps["gray"]) is None
    steps["gray"].refresh_from_db()
    assert steps["gray"].status == StepStatus.PENDING and steps["gray"].attempts == 0


def test_a_completion_counts_down_its_children_and_reports_the_ready_ones(diamond, user):
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    steps = steps_of(execution)
    # when the root completes
    won, ready, pending_children, counts = complete(claim(steps["resize"]), files=["a"])
    # then both its children are ready, and the run's counts include it
    assert won is True and pending_children == 2
    assert set(ready) == {steps["gray"].pk, steps["blur"].pk}
    assert (counts.total_steps, counts.finished_steps) == (4, 1)
    # and a child's claim brings the parent's outputs
    gray = claim(steps["gray"])
    assert gray.fetched.parents == {"resize": ("completed", {"files": ["a"]})}
    # when one branch completes, the join still waits for the other
    won, ready, pending_children, _ = complete(gray)
    assert won and not ready and pending_children == 1
    assert ComponentExecution.objects.get(pk=steps["board"].pk).waiting_parents == 1
    # and a second completion of the same attempt changes nothing
    assert complete(gray)[0] is False
    assert ComponentExecution.objects.get(pk=steps["board"].pk).waiting_parents == 1


@pytest.mark.django_db(transaction=True)
def test_two_parents_completing_at_once_make_their_join_ready_exactly_once(builtins, pipeline_of, user):
    for _ in range(5):
        # given a diamond whose two branches are running
        execution = execution_start(pipeline=pipeline_of(DIAMOND_NODES, DIAMOND_EDGES), inputs=[], user=user)
        steps = steps_of(execution)
        complete(claim(steps["resize"]))
        branches = [claim(steps["gray"]), claim(steps["blur"])]
        barrier, results = threading.Barrier(2), []

        def finish(branch):
            try:
                barrier.wait()
                results.append(complete(branch))
            finally:
                connection.close()

        # when both complete at the same moment, on two connections
        threads = [threading.Thread(target=finish, args=(branch,)) for branch in branches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # then exactly one of them saw the join become ready
        assert all(won for won, *_ in results)
        assert sorted(len(ready) for _, ready, _, _ in results) == [0, 1]
        assert [list(ready) for _, ready, _, _ in results if ready] == [[steps["board"].pk]]
        assert ComponentExecution.objects.get(pk=steps["board"].pk).waiting_parents == 0


def test_a_retry_counts_only_the_parents_it_must_run_again(diamond, user):
    # given a failed run: resize and blur completed, gray failed, board skipped
    execution = execution_start(pipeline=diamond, inputs=[], user=user)
    statuses = {"resize": StepStatus.COMPLETED, "gray": StepStatus.FAILED, "blur": StepStatus.COMPLETED,
                "board": StepStatus.SKIPPED}
    for node_id, status in statuses.items():
        execution.steps.filter(node_id=node_id).update(status=status, output_data={"files": []})
    PipelineExecution.objects.filter(pk=execution.pk).update(status=ExecutionStatus.FAILED)
    execution.refresh_from_db()
    # when it is retried
    retry = execution_retry(execution=execution, user=user)
    # then gray waits for nothing and board only for gray (blur's output is reused)
    assert {s.node_id: (s.status, s.waiting_parents) for s in retry.steps.all()} == {
        "resize": (StepStatus.COMPLETED, 0), "blur": (StepStatus.COMPLETED, 0),
        "gray": (StepStatus.PENDING, 0), "board": (StepStatus.PENDING, 1)}


def test_a_completion_records_the_inputs_the_step_was_given(diamond, user, jpeg_file):
    image = jpeg_file()
    execution = execution_start(pipeline=diamond, inputs=[image.id], user=user)
    claimed = claim(steps_of(execution)["resize"])
    step = claimed.fetched.step
    step.input_data = {**step.input_data, "inputs": [str(image.id)]}
    assert step_complete(step=step, attempt=1, output_data={"files": []}, execution_time_ms=3, resource_usage={})
    step.refresh_from_db()
    assert step.input_data["inputs"] == [str(image.id)] and step.input_data["parents"] == []


def test_a_completion_records_its_outputs_lineage_only_when_it_wins(diamond, user, jpeg_file):
    # given a claimed step with an input and an output file
    image, output = jpeg_file(), jpeg_file()
    execution = execution_start(pipeline=diamond, inputs=[image.id], user=user)
    step = claim(steps_of(execution)["resize"]).fetched.step
    pairs = [(str(output.id), str(image.id))]
    # when a stale attempt completes it, nothing is recorded
    assert not step_complete(step=step, attempt=step.attempts + 1, output_data={"files": [str(output.id)]},
                             execution_time_ms=1, resource_usage={}, lineage=pairs)
    assert not FileLineage.objects.exists()
    # when the claimant completes it, its output derives from its input, made by the step
    assert step_complete(step=step, attempt=step.attempts, output_data={"files": [str(output.id)]},
                         execution_time_ms=1, resource_usage={}, lineage=pairs)
    assert list(FileLineage.objects.values_list("file_id", "derived_from_id", "step_id")) == [
        (output.id, image.id, step.pk)]
    # and a duplicate completion adds nothing
    assert not step_complete(step=step, attempt=step.attempts, output_data={"files": [str(output.id)]},
                             execution_time_ms=1, resource_usage={}, lineage=pairs)
    assert FileLineage.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_engine_statements_are_prepared_once_per_connection(builtins, pipeline_of, user, settings):
    def prepared() -> dict[str, int]:
        """Runs of this connection's prepared statements, by their first CTE (the server shows
        them with $n placeholders)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements")
            return {text.split()[1]: runs for text, runs in cursor.fetchall()}

    connection.close()
    pipeline = pipeline_of([node("a", "passthrough"), node("b", "passthrough")], [{"from": "a", "to": "b"}])
    # when steps are claimed and completed on one connection
    for _ in range(3):
        execution = execution_start(pipeline=pipeline, inputs=[], user=user)
        complete(claim(steps_of(execution)["a"]))
    # then each statement was prepared once and run three times
    runs = prepared()
    assert statements._CLAIM_SQL.split()[1] == "target" and statements._COMPLETE_SQL.split()[1] == "done"
    assert runs == {"target": 3, "done": 3}
    # and with prepared statements off, a new connection prepares nothing
    connection.close()
    settings.ENGINE_PREPARED_STATEMENTS = False
    execution = execution_start(pipeline=pipeline, inputs=[], user=user)
    assert claim(steps_of(execution)["a"]) is not None
    assert prepared() == {}
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_worker_sessions_commit_asynchronously_unless_configured_otherwise(settings):
    def synchronous_commit_of_a_new_connection() -> str:
        new = connections.create_connection("default")
        try:
            with new.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                return cursor.fetchone()[0]
        finally:
            new.close()

    # given the worker start-up configuration (what a Celery worker runs at worker_init)
    configure_worker_sessions()
    # then the worker's sessions do not wait for the WAL flush
    assert synchronous_commit_of_a_new_connection() == "off"
    # unless the deployment asks for synchronous engine commits
    settings.ENGINE_SYNCHRONOUS_COMMIT = True
    assert synchronous_commit_of_a_new_connection() == "on"


def test_log_shipping_is_asked_for_at_most_once_per_window(db):
    from django.core.cache import cache

    cache.delete(SHIP_SOON_KEY)
    # when many runs end within the window
    asked = [ship_soon(window_seconds=1) for _ in range(5)]
    # then one shipping run is enqueued
    assert asked == [True, False, False, False, False]
    # and after the window the next end asks again
    time.sleep(1.1)
    assert ship_soon(window_seconds=1) is True
    cache.delete(SHIP_SOON_KEY)


def _run_left_open_after_its_last_completion(pipeline_of, user) -> PipelineExecution:
    """A one-step run whose step completed but whose end was never committed (the worker died
    between the two, or a PostgreSQL crash lost the second commit)."""
    execution = execution_start(pipeline=pipeline_of([node("only", "passthrough")]), inputs=[], user=user)
    complete(claim(steps_of(execution)["only"]))
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.RUNNING
    return execution


@pytest.mark.django_db(transaction=True)  # the sweep starts like a task: it recycles the connection
def test_the_sweep_finishes_a_run_whose_steps_have_all_finished(builtins, pipeline_of, user):
    from datetime import timedelta

    from executions.engine.recovery import execution_sweep

    execution = _run_left_open_after_its_last_completion(pipeline_of, user)
    # a run still changing is left alone
    assert execution_sweep()["finished"] == 0
    # when it has been open past the heartbeat timeout
    PipelineExecution.objects.filter(pk=execution.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert execution_sweep()["finished"] == 1
    # then it is completed with its leaf's outputs
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED and execution.output_data == {"outputs": {"only": []}}
    assert execution_sweep()["finished"] == 0


def test_a_redelivered_task_of_a_finished_step_finishes_its_run(builtins, pipeline_of, user):
    from executions.engine.lifecycle import step_execute

    execution = _run_left_open_after_its_last_completion(pipeline_of, user)
    # when the step's task is delivered again (it was never acknowledged)
    outcome = step_execute(step_id=steps_of(execution)["only"].pk)
    # then it does not run again, and the run is completed
    assert outcome.reason == "already completed"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_a_claim_cancels_the_claimed_step(builtins, pipeline_of, user):
    from django.db import transaction

    from executions.services import execution_cancel

    # given a running diamond whose branch "gray" is being claimed in a transaction not yet committed
    execution = execution_start(pipeline=pipeline_of(DIAMOND_NODES, DIAMOND_EDGES), inputs=[], user=user)
    steps = steps_of(execution)
    complete(claim(steps["resize"]))
    cancelled = threading.Event()

    def cancel():
        try:
            execution_cancel(execution=PipelineExecution.objects.get(pk=execution.pk), user=user)
            cancelled.set()
        finally:
            connection.close()

    with transaction.atomic():
        claimed = claim(steps["gray"])
        # when the run is cancelled meanwhile (it waits for the claim's row lock)
        canceller = threading.Thread(target=cancel)
        canceller.start()
        assert not cancelled.wait(0.5)
    canceller.join(10)
    # then the claimed step is cancelled too, and its result will be refused
    assert cancelled.is_set()
    assert ComponentExecution.objects.get(pk=steps["gray"].pk).status == StepStatus.CANCELLED
    assert complete(claimed)[0] is False


@pytest.mark.django_db(transaction=True)
def test_a_task_after_the_database_dropped_its_connection_gets_a_new_one():
    import psycopg
    from django.db.utils import OperationalError

    from executions.worker import recycle_connection

    # given a worker connection that the server dropped (a restart, an idle timeout)
    recycle_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    with psycopg.connect(**{k: v for k, v in params.items() if k in {"host", "port", "user", "dbname"}},
                         autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # when the next task starts, nothing pings the server: its first query fails (and is retried)
    recycle_connection()
    with pytest.raises(OperationalError), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    # then the retry's start replaces the broken connection
    recycle_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] != pid


@pytest.mark.django_db(transaction=True)
def test_a_runs_created_line_is_stored_before_its_first_step_is_enqueued(builtins, pipeline_of, user, monkeypatch):
    from executions.tasks import step_run

    seen = []

    def enqueue(args, **kwargs):
        step = ComponentExecution.objects.get(pk=args[0])
        seen.append(ExecutionLogRecord.objects.filter(execution_id=step.execution_id,
                                                      extra__event="execution_created").exists())

    monkeypatch.setattr(step_run, "apply_async", enqueue)
    # when a run starts, a worker may log for it as soon as its root is enqueued
    execution_start(pipeline=pipeline_of([node("only", "passthrough")]), inputs=[], user=user)
    # so its "created" line (and timestamp) is there before that
    assert seen == [True]


def test_a_step_asking_for_an_output_its_parent_did_not_produce_fails_with_the_edge_named(
        builtins, pipeline_of, user, jpeg_file):
    from executions.engine.lifecycle import step_execute

    # given a run whose edge takes output 2 of a parent that passes on one file
    pipeline = pipeline_of([node("a", "passthrough"), node("b", "grayscale")],
                           [{"from": "a", "to": "b", "outputs": [2]}])
    execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
    steps = steps_of(execution)
    assert step_execute(step_id=steps["a"].pk).reason == "completed"
    # when the child runs
    outcome = step_execute(step_id=steps["b"].pk)
    # then it fails (claimed, so its run can finish), naming the edge and what the parent produced
    assert outcome.reason == "bad inputs"
    child = ComponentExecution.objects.get(pk=steps["b"].pk)
    assert child.status == StepStatus.FAILED and child.attempts == 1
    assert child.error_message == "edge a -> b asks for output 2, but a produced 1"
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.FAILED and "node 'b'" in execution.error_message
