"""WebSocket and event-stream authentication keeps long-lived tokens out of URLs: a single-use,
short-lived ticket (POST /api/v1/ws-tickets/) goes in `?ticket=`; `?token=` is refused."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.core.cache import cache
from django.test import AsyncClient
from rest_framework.test import APIClient

from imageflow.accounts.services import WS_TICKET_PREFIX, ws_ticket_issue, ws_ticket_redeem
from tests.api.conftest import client_for
from tests.factories import UserFactory
from tests.live.test_consumer import connect, receive_all, token_header, two_step_run

pytestmark = pytest.mark.django_db(transaction=True)


def ws_run(coro):
    return asyncio.run(coro)


async def first_message_or_close(path: str, headers=None):
    ws = await connect(path, headers=headers)
    messages, code = await receive_all(ws, until_close=False)
    if messages:
        await ws.disconnect()
        return messages[0], None
    return None, code


def test_a_ticket_is_issued_to_an_authenticated_user_only_and_expires_in_its_ttl():
    user = UserFactory()
    assert APIClient().post("/api/v1/ws-tickets/").status_code == 401

    response = client_for(user).post("/api/v1/ws-tickets/")
    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] == settings.WS_TICKET_TTL_SECONDS == 30
    assert response["Cache-Control"] == "no-store"
    # stored in the Redis cache, for the user, with a TTL (the ticket dies there by itself)
    assert cache.get(WS_TICKET_PREFIX + body["ticket"]) == str(user.pk)
    assert 0 < cache.ttl(WS_TICKET_PREFIX + body["ticket"]) <= 30


def test_a_ticket_opens_one_websocket_and_only_one():
    execution, _, _ = two_step_run()
    ticket = client_for(execution.created_by).post("/api/v1/ws-tickets/").json()["ticket"]
    path = f"/ws/executions/{execution.id}/?ticket={ticket}"

    snapshot, _ = ws_run(first_message_or_close(path))
    assert (snapshot["type"], snapshot["execution_id"]) == ("snapshot", str(execution.id))
    # the same ticket again (replayed from a log, say) is refused
    assert ws_run(first_message_or_close(path)) == (None, 4401)


def test_a_ticket_of_another_user_is_the_run_not_found():
    execution, _, _ = two_step_run()
    ticket = ws_ticket_issue(user=UserFactory())
    assert ws_run(first_message_or_close(f"/ws/executions/{execution.id}/?ticket={ticket}")) == (None, 4404)


def test_an_unknown_ticket_is_refused():
    execution, _, _ = two_step_run()
    assert ws_run(first_message_or_close(f"/ws/executions/{execution.id}/?ticket=made-up")) == (None, 4401)


def test_a_valid_api_token_in_the_websocket_url_is_refused_even_with_a_session(token_for):
    execution, _, _ = two_step_run()
    owner = execution.created_by
    key = token_for(owner)
    session = SessionStore()
    session[SESSION_KEY] = str(owner.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = owner.get_session_auth_hash()
    session.save()
    cookie = [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session.session_key}".encode())]
    path = f"/ws/executions/{execution.id}/"

    # the header and the cookie each work
    assert ws_run(first_message_or_close(path, headers=token_header(key)))[0]["type"] == "snapshot"
    assert ws_run(first_message_or_close(path, headers=cookie))[0]["type"] == "snapshot"
    # the same token in the URL does not, with or without the cookie
    assert ws_run(first_message_or_close(f"{path}?token={key}")) == (None, 4401)
    assert ws_run(first_message_or_close(f"{path}?token={key}", headers=cookie)) == (None, 4401)


def test_of_many_connections_racing_with_one_ticket_exactly_one_gets_the_user():
    user = UserFactory()
    ticket = ws_ticket_issue(user=user)
    results = []
    barrier = threading.Barrier(16)

    def redeem():
        barrier.wait()
        results.append(ws_ticket_redeem(ticket=ticket))
        from django.db import connection

        connection.close()

    threads = [threading.Thread(target=redeem) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.pk for r in results if r is not None] == [user.pk]


def test_the_event_stream_refuses_a_token_in_the_url_and_takes_a_ticket_once(token_for):
    execution, _ = two_step_run()[:2]
    key = token_for(execution.created_by)
    ticket = ws_ticket_issue(user=execution.created_by)
    url = f"/api/v1/executions/{execution.id}/events/"

    async def scenario():
        client = AsyncClient()
        return (await client.get(url, {"token": key}), await client.get(url, {"ticket": ticket}),
                await client.get(url, {"ticket": ticket}))

    in_url, with_ticket, again = asyncio.run(scenario())
    assert (in_url.status_code, in_url.json()["type"]) == (401, "token_in_url")
    assert with_ticket.status_code == 200
    assert with_ticket.json()["events"][0]["type"] == "snapshot"
    assert again.status_code == 401
