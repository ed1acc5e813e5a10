"""step_items events: a step's item counts, coalesced per run, over the real Redis channel layer
(what a watcher of the run's group gets is read from that group's own pub/sub channel)."""

import json
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis
from django.conf import settings

from executions import events
from executions.signals import step_items_progressed
from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory
from tests.live.conftest import commit_execution_status, commit_step_status

pytestmark = pytest.mark.django_db(transaction=True)


class GroupListener:
    """Every message published to a run's group, as a subscriber of the channel layer gets it."""

    def __init__(self, execution_id) -> None:
        self.pubsub = redis.Redis.from_url(settings.CHANNEL_LAYER_REDIS_URL, decode_responses=True).pubsub()
        self.pubsub.subscribe(events.group_channel(execution_id))
        assert self.pubsub.get_message(timeout=2)["type"] == "subscribe"
        self.received: list[tuple[float, dict]] = []

    def read(self, *, seconds: float) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = self.pubsub.get_message(timeout=0.05)
            if message and message["type"] == "message":
                self.received.append((time.monotonic(), json.loads(json.loads(message["data"])["text"])))
        return [event for _, event in self.received]

    def close(self) -> None:
        self.pubsub.close()


def items(completed: int, *, total: int = 1000, failed: int = 0, cached: int = 0) -> dict:
    return {"total": total, "completed": completed, "failed": failed, "skipped": 0, "cached": cached}


def send(step, counts: dict) -> None:
    step_items_progressed.send(sender=None, execution_id=step.execution_id, step_id=step.id, node_id=step.node_id,
                               items=counts)


@pytest.fixture
def itemized_step():
    execution = PipelineExecutionFactory(status="running")
    return ComponentExecutionFactory(execution=execution, node_id="resize", status="running", item_count=1000)


def test_500_item_signals_within_a_second_publish_at_most_the_rate_and_the_last_counts(itemized_step, settings):
    # given the default rate of 4 item events a second per run
    settings.ITEM_EVENTS_PER_SECOND = 4.0
    listener = GroupListener(itemized_step.execution_id)
    try:
        # when 500 items finish over most of a second (counts only grow; the last is 500 of 1000)
        began, began_at = time.monotonic(), datetime.now(UTC)
        for n in range(1, 501):
            send(itemized_step, items(n, failed=n // 100, cached=n // 10))
            time.sleep(max(0.0, began + n * 0.0018 - time.monotonic()))
        sent_in = time.monotonic() - began
        # then, once the trailing flush is out, a watcher got few events
        published = listener.read(seconds=1.0)
    finally:
        listener.close()
    assert sent_in < 1.0
    assert all(event["type"] == "step_items" for event in published)
    stamps = [datetime.fromisoformat(event["timestamp"]) for event in published]  # when each was published
    window = (stamps[-1] - began_at).total_seconds()
    # (events went out while the items finished, not only at the end)
    assert 4 <= len(published) <= settings.ITEM_EVENTS_PER_SECOND * window + 1, (len(published), window)
    assert len(published) <= settings.ITEM_EVENTS_PER_SECOND + 2
    # and one slot apart at least (with a few ms of clock slack)
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 1 / settings.ITEM_EVENTS_PER_SECOND - 0.03, gaps
    # and growing counts, the last equal to the last sent, though no later signal came
    completed = [event["items"]["completed"] for event in published]
    assert completed == sorted(completed) and completed[0] == 1
    assert published[-1]["items"] == items(500, failed=5, cached=50)
    assert published[-1]["run_items"] == items(500, failed=5, cached=50)
    assert (published[-1]["node_id"], published[-1]["step_id"]) == ("resize", str(itemized_step.id))
    # and numbered in sequence
    assert [event["seq"] for event in published] == list(range(1, len(published) + 1))
    # and the history keeps only the step's newest item event
    assert events.history(itemized_step.execution_id) == [published[-1]]


def test_a_steps_last_counts_go_out_before_its_completion_which_carries_them(itemized_step, settings):
    # given a slow rate, so every count after the first waits for a slot
    settings.ITEM_EVENTS_PER_SECOND = 0.5
    listener = GroupListener(itemized_step.execution_id)
    try:
        send(itemized_step, items(10))
        send(itemized_step, items(20))
        send(itemized_step, items(30, failed=1))
        # when the step fails before the next slot (with those counts committed)
        type(itemized_step).objects.filter(pk=itemized_step.pk).update(items_completed=30, items_failed=1)
        commit_step_status(itemized_step, expected="running", to="failed")
        published = listener.read(seconds=0.5)
    finally:
        listener.close()
    # then its pending counts were published first, and the status event carries them
    assert [(e["type"], e["items"]["completed"]) for e in published] == [
        ("step_items", 10), ("step_items", 30), ("step", 30)]
    assert published[-1]["status"] == "failed"
    assert published[-1]["items"] == items(30, failed=1)
    assert published[-1]["previous_status"] == "running"


def test_a_steps_final_counts_are_published_at_once_whatever_the_rate(itemized_step, settings):
    settings.ITEM_EVENTS_PER_SECOND = 0.5
    listener = GroupListener(itemized_step.execution_id)
    try:
        send(itemized_step, items(1, total=3))
        send(itemized_step, items(2, total=3))
        # when the last item finishes (2 completed, 1 failed of 3)
        send(itemized_step, items(2, total=3, failed=1))
        published = listener.read(seconds=0.3)
    finally:
        listener.close()
    # then the final counts are out within the same moment, the middle reading folded into them
    assert [e["items"] for e in published] == [items(1, total=3), items(2, total=3, failed=1)]


def test_an_older_reading_from_another_process_is_not_published(itemized_step):
    # given a process that published 50 of 1000
    run = itemized_step.execution_id
    step = (str(itemized_step.id), "resize")
    first = events.publish_step_items(run, [(*step, items(50))])
    # when another process flushes its older reading, then an equal one
    late = events.publish_step_items(run, [(*step, items(49))])
    same = events.publish_step_items(run, [(*step, items(50))])
    # then neither is published (no seq taken) and the next higher one is
    assert [e["items"]["completed"] for e in first] == [50]
    assert late == [] and same == []
    assert events.current_seq(run) == 1
    assert [e["seq"] for e in events.publish_step_items(run, [(*step, items(51))])] == [2]


def test_run_items_sum_the_published_counts_of_the_runs_steps():
    execution = PipelineExecutionFactory(status="running")
    resize = ComponentExecutionFactory(execution=execution, node_id="resize", item_count=10)
    gray = ComponentExecutionFactory(execution=execution, node_id="gray", item_count=10)
    events.publish_step_items(execution.id, [(str(resize.id), "resize", items(10, total=10, cached=4))])
    [event] = events.publish_step_items(execution.id, [(str(gray.id), "gray", items(3, total=10, failed=1))])
    assert event["items"] == items(3, total=10, failed=1)
    assert event["run_items"] == {"total": 20, "completed": 13, "failed": 1, "skipped": 0, "cached": 4}


def test_no_item_event_is_published_after_the_runs_final_event(itemized_step):
    run = itemized_step.execution_id
    commit_step_status(itemized_step, expected="running", to="cancelled")
    commit_execution_status(run, expected="running", to="cancelled")
    seq = events.current_seq(run)
    assert events.history(run)[-1]["final"] is True
    # when a process flushes counts after the end
    assert events.publish_step_items(run, [(str(itemized_step.id), "resize", items(7))]) == []
    # then the run's story still ends with its final event
    assert events.current_seq(run) == seq
    assert events.history(run)[-1]["final"] is True


def test_item_events_never_push_status_events_out_of_the_history(itemized_step, settings):
    # given a history of 5 events
    settings.PROGRESS_EVENT_HISTORY = 5
    settings.ITEM_EVENTS_PER_SECOND = 1000.0
    run = itemized_step.execution_id
    other = ComponentExecutionFactory(execution=itemized_step.execution, node_id="blur", status="pending")
    commit_step_status(other, expected="pending", to="running")
    # when 200 item events are published
    for n in range(1, 201):
        events.publish_step_items(run, [(str(itemized_step.id), "resize", items(n))])
    commit_step_status(other, expected="running", to="completed")
    # then the history has the two status events and the newest item event, in seq order
    kept = events.history(run)
    assert [(e["type"], e.get("status"), e.get("items", {}).get("completed")) for e in kept] == [
        ("step", "running", None), ("step_items", None, 200), ("step", "completed", None)]
    assert [e["seq"] for e in kept] == [1, 201, 202]
    # and it still reaches back to the start: the missing numbers are superseded item events
    assert events.history_after(run, after=0) == kept
    assert events.history_after(run, after=150) == kept[1:]


def test_a_history_trimmed_past_a_clients_seq_asks_for_a_snapshot(itemized_step, settings):
    settings.PROGRESS_EVENT_HISTORY = 3
    run = itemized_step.execution_id
    steps = [ComponentExecutionFactory(execution=itemized_step.execution, node_id=f"n{i}") for i in range(5)]
    for step in steps:
        commit_step_status(step, expected="pending", to="running")
    # 5 status events, 3 kept: seq 3, 4, 5
    assert [e["seq"] for e in events.history(run)] == [3, 4, 5]
    assert events.history_after(run, after=1) is None
    assert [e["seq"] for e in events.history_after(run, after=2)] == [3, 4, 5]
    assert events.history_after(run, after=5) == []


def test_the_snapshot_carries_each_steps_item_counts_and_the_runs_sum():
    execution = PipelineExecutionFactory(status="running")
    ComponentExecutionFactory(execution=execution, node_id="resize", item_count=120, items_completed=37,
                              items_failed=2, items_cached=10)
    ComponentExecutionFactory(execution=execution, node_id="merge")
    snapshot = events.snapshot(execution.id)
    assert {s["node_id"]: s["items"] for s in snapshot["steps"]} == {
        "resize": {"total": 120, "completed": 37, "failed": 2, "skipped": 0, "cached": 10}, "merge": None}
    assert snapshot["run_items"] == {"total": 120, "completed": 37, "failed": 2, "skipped": 0, "cached": 10}


def test_signals_from_several_threads_of_one_process_publish_growing_counts(itemized_step, settings):
    settings.ITEM_EVENTS_PER_SECOND = 20.0
    listener = GroupListener(itemized_step.execution_id)
    counter = iter(range(1, 401))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            # readings taken in order, sent by four threads: they may arrive out of order
            send(itemized_step, items(n))

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        published = listener.read(seconds=0.5)
    finally:
        listener.close()
    completed = [e["items"]["completed"] for e in published]
    assert completed == sorted(completed) and completed[-1] == 400
    assert len(set(completed)) == len(completed)


def test_the_event_of_a_run_without_items_has_none(settings):
    execution = PipelineExecutionFactory(status="running")
    step = ComponentExecutionFactory(execution=execution, node_id="merge", status="pending")
    commit_step_status(step, expected="pending", to="running")
    [event] = events.history(execution.id)
    assert "items" not in event and event["type"] == "step"
    assert events.snapshot(execution.id)["run_items"] is None
    assert uuid.UUID(event["step_id"]) == step.id


def test_a_finished_steps_counts_as_committed_go_out_before_its_status_when_no_signal_brought_them(itemized_step):
    # given a step whose last item failed and failed it, its counts committed with the failure but
    # their signal sent after the step's (the engine's order for a failed item)
    listener = GroupListener(itemized_step.execution_id)
    try:
        send(itemized_step, items(10, total=1000))
        type(itemized_step).objects.filter(pk=itemized_step.pk).update(items_completed=12, items_failed=1)
        commit_step_status(itemized_step, expected="running", to="failed")
        send(itemized_step, items(12, total=1000, failed=1))
        published = listener.read(seconds=0.5)
    finally:
        listener.close()
    # then the committed counts came first, the failure carries them, and the late signal adds nothing
    assert [(e["type"], e["items"]) for e in published] == [
        ("step_items", items(10)), ("step_items", items(12, failed=1)), ("step", items(12, failed=1))]


def test_a_websocket_client_gets_the_item_events_after_its_snapshot(itemized_step, settings, token_for):
    import asyncio

    from asgiref.sync import sync_to_async

    from imageflow.asgi import application
    from tests.live.communicator import WebsocketCommunicator

    settings.ITEM_EVENTS_PER_SECOND = 1000.0
    type(itemized_step).objects.filter(pk=itemized_step.pk).update(items_completed=5)
    key = token_for(itemized_step.execution.created_by)

    async def scenario():
        ws = WebsocketCommunicator(application, f"/ws/executions/{itemized_step.execution_id}/",
                                   headers=[(b"authorization", f"Token {key}".encode())])
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from()
        for done in (6, 7):
            await sync_to_async(send)(itemized_step, items(done))
            await asyncio.sleep(0.01)  # one slot (1 ms) apart: each goes out
        received = [await ws.receive_json_from() for _ in range(2)]
        await ws.disconnect()
        return snapshot, received

    snapshot, received = asyncio.run(scenario())
    assert snapshot["steps"][0]["items"] == items(5)
    assert [(m["type"], m["seq"], m["items"]["completed"]) for m in received] == [
        ("step_items", snapshot["seq"] + 1, 6), ("step_items", snapshot["seq"] + 2, 7)]
