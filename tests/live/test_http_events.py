"""`/api/v1/executions/<id>/events/`: long poll and Server-Sent Events over the real channel layer."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory, UserFactory
from tests.live.conftest import commit_execution_status, commit_step_status

pytestmark = pytest.mark.django_db(transaction=True)

db = sync_to_async


async def streamed_json(response):
    assert response["Content-Type"] == "application/json"
    return json.loads(b"".join([chunk async for chunk in response.streaming_content]))


def one_step_run():
    execution = PipelineExecutionFactory()
    step = ComponentExecutionFactory(execution=execution, node_id="resize")
    return execution, step


def test_long_poll_answers_the_snapshot_then_waits_for_the_next_event(token_for):
    execution, step = one_step_run()
    auth = {"headers": {"Authorization": f"Token {token_for(execution.created_by)}"}}
    url = f"/api/v1/executions/{execution.id}/events/"

    async def scenario():
        client = AsyncClient()
        first = (await client.get(url, **auth)).json()
        seq = first["last_seq"]

        async def later():
            await asyncio.sleep(0.3)
            await db(commit_step_status)(step, expected="pending", to="running")

        waiter = asyncio.create_task(later())
        second = await streamed_json(await client.get(url, {"after": seq, "timeout": 10}, **auth))
        await waiter
        empty = await streamed_json(await client.get(url, {"after": second["last_seq"], "timeout": 0.2}, **auth))
        return first, second, empty

    first, second, empty = asyncio.run(scenario())
    assert [e["type"] for e in first["events"]] == ["snapshot"]
    assert first["final"] is False
    assert [(e["seq"], e["node_id"], e["status"]) for e in second["events"]] == [(first["last_seq"] + 1, "resize", "running")]
    assert empty == {"events": [], "last_seq": second["last_seq"], "final": False}


def test_server_sent_events_stream_the_snapshot_and_every_event_until_the_end(token_for):
    execution, step = one_step_run()
    key = token_for(execution.created_by)

    async def scenario():
        response = await AsyncClient().get(f"/api/v1/executions/{execution.id}/events/",
                                           headers={"Accept": "text/event-stream", "Authorization": f"Token {key}"})
        assert response["Content-Type"] == "text/event-stream"

        async def drive():
            await asyncio.sleep(0.3)
            await db(commit_execution_status)(execution.id, expected="pending", to="running")
            await db(commit_step_status)(step, expected="pending", to="running")
            await db(commit_step_status)(step, expected="running", to="completed")
            await db(commit_execution_status)(execution.id, expected="running", to="completed")

        driver = asyncio.create_task(drive())
        chunks = []
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode())
        await driver
        return "".join(chunks)

    text = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    frames = [block for block in text.split("\n\n") if block.startswith("id:")]
    parsed = [dict(line.split(": ", 1) for line in frame.split("\n")) for frame in frames]
    data = [json.loads(frame["data"]) for frame in parsed]
    assert [frame["event"] for frame in parsed] == ["snapshot", "execution", "step", "step", "execution"]
    assert [int(frame["id"]) for frame in parsed] == [d["seq"] for d in data]
    assert [d["seq"] for d in data] == list(range(data[0]["seq"], data[0]["seq"] + 5))
    assert [d["status"] for d in data[1:]] == ["running", "running", "completed", "completed"]
    assert data[-1]["final"] is True


def test_events_of_another_users_run_are_not_found_and_anonymous_is_401(token_for):
    execution, _ = one_step_run()
    key = token_for(UserFactory())

    async def scenario():
        client = AsyncClient()
        url = f"/api/v1/executions/{execution.id}/events/"
        return await client.get(url, headers={"Authorization": f"Token {key}"}), await client.get(url)

    stranger, anonymous = asyncio.run(scenario())
    assert (stranger.status_code, stranger.json()["type"]) == (404, "not_found")
    assert anonymous.status_code == 401


def test_a_long_poll_after_a_superseded_item_event_answers_the_kept_events_not_a_snapshot(token_for):
    # given a map step that published 3 item events: the history keeps only the newest
    from executions import events

    execution, step = one_step_run()
    counts = {"total": 10, "completed": 0, "failed": 0, "skipped": 0, "cached": 0}
    for done in (1, 2, 3):
        events.publish_step_items(execution.id, [(str(step.id), "resize", {**counts, "completed": done})])
    auth = {"headers": {"Authorization": f"Token {token_for(execution.created_by)}"}}
    url = f"/api/v1/executions/{execution.id}/events/"

    async def scenario():
        client = AsyncClient()
        # when a client that saw seq 1 asks for what came after
        return await streamed_json(await client.get(url, {"after": 1, "timeout": 1}, **auth))

    body = asyncio.run(scenario())
    # then it gets the step's newest counts (seq 2 was superseded by 3), no resync
    assert [(e["type"], e["seq"], e["items"]["completed"]) for e in body["events"]] == [("step_items", 3, 3)]
    assert (body["last_seq"], body["final"]) == (3, False)
