"""A WebSocket client follows a real run: the engine's Celery worker (a real worker on the real
broker) commits the transitions, the events travel through the real Redis channel layer."""

import asyncio
import json
import uuid

import pytest
from django.conf import settings

from executions import events
from executions.models import ExecutionStatus
from executions.services import execution_start
from imageflow.asgi import application
from tests.executions.conftest import (  # noqa: F401  (fixtures)
    _purge_queue,
    builtins,
    engine_settings,
    jpeg_file,
    node,
    pipeline_of,
)
from tests.live.communicator import WebsocketCommunicator

pytestmark = [pytest.mark.worker, pytest.mark.timeout(180), pytest.mark.django_db(transaction=True)]


def test_a_websocket_client_receives_the_snapshot_and_every_transition_of_a_real_run_in_order(
    engine_settings, builtins, pipeline_of, jpeg_file, user, token_for,
):
    from celery.contrib.testing.worker import start_worker

    import celery.contrib.testing.tasks  # noqa: F401  (celery.ping for the start-up check)
    from imageflow.celery import app

    _purge_queue()
    # given a started run whose first step waits in the queue (no worker yet)
    pipeline = pipeline_of([node("resize", "resize", width=64), node("gray", "grayscale"), node("blur", "blur", radius=1)],
                           [{"from": "resize", "to": "gray"}, {"from": "resize", "to": "blur"}])
    execution = execution_start(pipeline=pipeline, inputs=[jpeg_file().id], user=user)
    key = token_for(user)

    async def follow(ws):
        messages = []
        while True:
            output = await ws.receive_output(timeout=60)
            if output["type"] == "websocket.close":
                return messages, output.get("code")
            messages.append(json.loads(output["text"]))

    async def scenario():
        ws = WebsocketCommunicator(application, f"/ws/executions/{execution.id}/",
                                   headers=[(b"authorization", f"Token {key}".encode())])
        assert (await ws.connect())[0]
        snapshot = await ws.receive_json_from()
        # when a real worker runs it
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=True, shutdown_timeout=30,
                          queues=[settings.CELERY_TASK_DEFAULT_QUEUE]):
            messages, code = await follow(ws)
        return snapshot, messages, code

    snapshot, messages, code = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    execution.refresh_from_db()
    assert execution.status == ExecutionStatus.COMPLETED, execution.error_message
    # then the snapshot shows the queued run
    assert snapshot["type"] == "snapshot" and snapshot["total_steps"] == 3
    assert {s["node_id"]: s["status"] for s in snapshot["steps"]} == {"resize": "pending", "gray": "pending", "blur": "pending"}
    # and every later event arrived once, in seq order, without a gap
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(messages)))
    # and together with the snapshot's history they are the run's whole story, as published
    assert events.history(execution.id, after=0) == (
        events.history(execution.id, after=0)[: snapshot["seq"]] + messages
    )
    # (a map step's step_items events carry item counts, not transitions)
    story = [event for event in events.history(execution.id, after=0) if event["type"] != "step_items"]
    by_node = {}
    for event in story:
        by_node.setdefault(event["node_id"], []).append((event["previous_status"], event["status"]))
    assert by_node[None] == [("pending", "running"), ("running", "completed")]
    for node_id in ("resize", "gray", "blur"):
        assert by_node[node_id] == [("pending", "running"), ("running", "completed")], node_id
    # resize finished before its children started
    order = [(e["node_id"], e["status"]) for e in story]
    assert order.index(("resize", "completed")) < min(order.index(("gray", "running")), order.index(("blur", "running")))
    # progress only grows and ends at 100 with the final event last, then the server closed
    percentages = [m["percentage"] for m in messages if m["type"] != "step_items"]
    assert percentages == sorted(percentages) and percentages[-1] == 100.0
    assert messages[-1]["final"] is True and messages[-1]["execution_status"] == "completed"
    assert [m["final"] for m in messages].count(True) == 1
    assert code == 1000
    assert uuid.UUID(messages[-1]["execution_id"]) == execution.id
