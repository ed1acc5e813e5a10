"""`/ws/executions/<id>/` over the real Redis channel layer (Channels' communicator drives the
project's ASGI application: origin check, session/header-token/ticket auth, routing, consumer)."""

import asyncio
import json
import uuid

import pytest
from asgiref.sync import sync_to_async
from tests.live.communicator import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from executions import events
from imageflow.asgi import application
from tests.factories import ComponentExecutionFactory, PipelineExecutionFactory, StaffFactory, UserFactory
from tests.live.conftest import commit_execution_status, commit_step_status

pytestmark = pytest.mark.django_db(transaction=True)

db = sync_to_async


def run(coro):
    return asyncio.run(coro)


def token_header(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Token {key}".encode())]


async def connect(path: str, headers=None):
    communicator = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def receive_all(communicator, *, until_close: bool = True, timeout: float = 5.0) -> tuple[list[dict], int | None]:
    """Every JSON message until the server closes; returns (messages, close code)."""
    messages = []
    while True:
        output = await communicator.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return messages, output.get("code")
        messages.append(json.loads(output["text"]))
        if not until_close:
            return messages, None


def two_step_run():
    execution = PipelineExecutionFactory()
    first = ComponentExecutionFactory(execution=execution, node_id="load")
    second = ComponentExecutionFactory(execution=execution, node_id="resize")
    return execution, first, second


def test_owner_gets_the_snapshot_then_every_transition_in_order_then_the_close(token_for):
    execution, first, second = two_step_run()
    key = token_for(execution.created_by)

    async def scenario():
        ws = await connect(f"/ws/executions/{execution.id}/", headers=token_header(key))
        snapshot = await ws.receive_json_from(timeout=5)
        # when the engine commits the run's transitions
        await db(commit_execution_status)(execution.id, expected="pending", to="running")
        await db(commit_step_status)(first, expected="pending", to="running")
        await db(commit_step_status)(first, expected="running", to="completed")
        await db(commit_step_status)(second, expected="pending", to="running")
        await db(commit_step_status)(second, expected="running", to="completed")
        await db(commit_execution_status)(execution.id, expected="running", to="completed")
        messages, code = await receive_all(ws)
        return snapshot, messages, code

    snapshot, messages, code = run(scenario())
    # then the snapshot is the database's state
    assert snapshot["type"] == "snapshot"
    assert snapshot["execution_status"] == "pending"
    assert [(s["node_id"], s["status"]) for s in snapshot["steps"]] == [("load", "pending"), ("resize", "pending")]
    assert (snapshot["completed_steps"], snapshot["total_steps"], snapshot["final"]) == (0, 2, False)
    # and every change follows, numbered after the snapshot, in commit order
    assert [m["seq"] for m in messages] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 7))
    assert [(m["type"], m["node_id"], m["previous_status"], m["status"]) for m in messages] == [
        ("execution", None, "pending", "running"),
        ("step", "load", "pending", "running"),
        ("step", "load", "running", "completed"),
        ("step", "resize", "pending", "running"),
        ("step", "resize", "running", "completed"),
        ("execution", None, "running", "completed"),
    ]
    assert [m["percentage"] for m in messages] == [0.0, 0.0, 50.0, 50.0, 100.0, 100.0]
    assert [m["completed_steps"] for m in messages] == [0, 0, 1, 1, 2, 2]
    assert all(m["execution_id"] == str(execution.id) and m["total_steps"] == 2 for m in messages)
    assert [m["final"] for m in messages] == [False] * 5 + [True]
    # and the server closes normally after the final event
    assert code == 1000


def test_a_client_connecting_after_the_end_gets_the_final_snapshot_and_the_close(token_for):
    execution, first, _ = two_step_run()
    commit_execution_status(execution.id, expected="pending", to="running")
    commit_step_status(first, expected="pending", to="running")
    commit_step_status(first, expected="running", to="failed")
    commit_execution_status(execution.id, expected="running", to="failed")

    key = token_for(execution.created_by)

    async def scenario():
        ws = await connect(f"/ws/executions/{execution.id}/", headers=[(b"authorization", f"Token {key}".encode())])
        return await receive_all(ws)

    messages, code = run(scenario())
    assert len(messages) == 1
    snapshot = messages[0]
    assert (snapshot["type"], snapshot["execution_status"], snapshot["final"]) == ("snapshot", "failed", True)
    assert snapshot["seq"] == 4
    assert [(s["node_id"], s["status"]) for s in snapshot["steps"]] == [("load", "failed"), ("resize", "pending")]
    assert code == 1000


def test_a_user_who_is_not_the_owner_is_refused(token_for):
    execution, _, _ = two_step_run()
    key = token_for(UserFactory())

    async def scenario():
        ws = await connect(f"/ws/executions/{execution.id}/", headers=token_header(key))
        return await receive_all(ws)

    messages, code = run(scenario())
    assert messages == []
    assert code == 4404


def test_an_anonymous_client_or_a_bad_token_is_refused():
    execution, _, _ = two_step_run()

    async def scenario(path):
        ws = await connect(path)
        return await receive_all(ws)

    assert run(scenario(f"/ws/executions/{execution.id}/")) == ([], 4401)

    async def with_header(key):
        ws = await connect(f"/ws/executions/{execution.id}/", headers=token_header(key))
        return await receive_all(ws)

    assert run(with_header("not-a-token")) == ([], 4401)


def test_staff_may_watch_any_run_with_their_session_cookie():
    execution, _, _ = two_step_run()
    staff = StaffFactory()
    session = SessionStore()
    session[SESSION_KEY] = str(staff.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = staff.get_session_auth_hash()
    session.save()
    cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode()

    async def scenario():
        ws = await connect(f"/ws/executions/{execution.id}/", headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1:8000")])
        snapshot = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return snapshot

    snapshot = run(scenario())
    assert (snapshot["type"], snapshot["execution_id"]) == ("snapshot", str(execution.id))


def test_a_browser_from_another_site_is_refused_at_the_handshake(token_for):
    execution, _, _ = two_step_run()
    key = token_for(execution.created_by)

    async def scenario():
        communicator = WebsocketCommunicator(
            application, f"/ws/executions/{execution.id}/",
            headers=[*token_header(key), (b"origin", b"https://evil.example.com")],
        )
        connected, _ = await communicator.connect(timeout=5)
        return connected

    assert run(scenario()) is False


def test_a_gap_in_the_stream_is_filled_from_the_history_in_order(token_for):
    # given a connected client
    execution, first, _ = two_step_run()
    key = token_for(execution.created_by)

    async def scenario():
        ws = await connect(f"/ws/executions/{execution.id}/", headers=token_header(key))
        snapshot = await ws.receive_json_from(timeout=5)
        # when one event reaches the history but its broadcast is lost
        lost = await db(events.step_event)(execution_id=execution.id, step_id=first.id, node_id="load",
                                          status="running", previous_status="pending")
        await db(_append_to_history_only)(lost)
        # and the next one is broadcast
        await db(commit_step_status)(first, expected="pending", to="running")
        received = [await ws.receive_json_from(timeout=5) for _ in range(2)]
        await ws.disconnect()
        return snapshot, received

    snapshot, received = run(scenario())
    # then the client gets both, in order, without duplicates
    assert [m["seq"] for m in received] == [snapshot["seq"] + 1, snapshot["seq"] + 2]


def _append_to_history_only(event):
    # published like any event, but on a channel nobody listens on
    events.publish(event, channel="nobody-listens-here")


def test_events_are_published_on_the_channel_layers_own_group_channel():
    # The engine publishes from a Redis script, so the channel it names must be the layer's.
    from channels.layers import get_channel_layer

    execution_id = uuid.uuid4()

    async def layer_name():
        return get_channel_layer()._get_layer()._get_group_channel_name(events.group_name(execution_id))

    assert run(layer_name()) == events.group_channel(execution_id)


def test_published_counts_never_go_back_even_when_a_change_saw_older_ones():
    # given a run whose snapshot and events reported 2 of 4 steps finished
    execution_id = uuid.uuid4()

    def step(completed: int) -> dict:
        return events.step_event(execution_id=execution_id, step_id=uuid.uuid4(), node_id="n", status="completed",
                                 previous_status="running",
                                 progress={"execution_status": "running", "completed_steps": completed,
                                           "total_steps": 4})

    first = events.publish(step(2), channel="nobody-listens-here")
    # when a change that counted before the other branch finished publishes 1 of 4
    late = events.publish(step(1), channel="nobody-listens-here")
    # then it is published as 2 of 4, after the first, and the history agrees
    assert (first["completed_steps"], first["percentage"]) == (2, 50.0)
    assert (late["seq"], late["completed_steps"], late["percentage"], late["total_steps"]) == (2, 2, 50.0, 4)
    assert events.history(execution_id) == [first, late]
    # and a later count is published as it is
    assert events.publish(step(3), channel="nobody-listens-here")["percentage"] == 75.0
