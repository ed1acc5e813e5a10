"""A scoped token on the WebSocket and the event stream: in the header, or through a ticket that
keeps the token's limits (its organization, its revocation)."""

from __future__ import annotations

import asyncio

import pytest

from imageflow.accounts.services import api_token_create, api_token_revoke
from tests.accounts.conftest import client_with
from tests.factories import MembershipFactory, OrganizationFactory
from tests.live.test_consumer import connect, receive_all, token_header, two_step_run

pytestmark = pytest.mark.django_db(transaction=True)


def first_message_or_close(path: str, headers=None):
    async def scenario():
        ws = await connect(path, headers=headers)
        messages, code = await receive_all(ws, until_close=False)
        if messages:
            await ws.disconnect()
            return messages[0]["type"], None
        return None, code

    return asyncio.run(scenario())


def issue(user, *scopes, organization=None):
    name = "-".join(scopes) + (f"@{organization.slug}" if organization else "")
    return api_token_create(user=user, name=name, scopes=scopes, organization=organization)


def test_a_read_token_in_the_header_gets_the_snapshot():
    execution, _, _ = two_step_run()
    issued = issue(execution.created_by, "read")
    path = f"/ws/executions/{execution.id}/"

    assert first_message_or_close(path, headers=token_header(issued.secret)) == ("snapshot", None)

    api_token_revoke(token=issued.token)
    assert first_message_or_close(path, headers=token_header(issued.secret)) == (None, 4401)


def test_a_token_without_the_read_scope_is_not_let_in():
    execution, _, _ = two_step_run()
    issued = issue(execution.created_by, "run")
    path = f"/ws/executions/{execution.id}/"
    assert first_message_or_close(path, headers=token_header(issued.secret)) == (None, 4401)


def test_a_ticket_from_an_organization_token_keeps_the_organization_limit():
    execution, _, _ = two_step_run()  # a personal run: executions have no organization
    owner = execution.created_by
    org = OrganizationFactory()
    MembershipFactory(user=owner, organization=org)
    limited = issue(owner, "read", organization=org)
    full = issue(owner, "read")
    path = f"/ws/executions/{execution.id}/"

    ticket = client_with(full.secret).post("/api/v1/ws-tickets/").json()["ticket"]
    assert first_message_or_close(f"{path}?ticket={ticket}") == ("snapshot", None)
    ticket = client_with(limited.secret).post("/api/v1/ws-tickets/").json()["ticket"]
    assert first_message_or_close(f"{path}?ticket={ticket}") == (None, 4404)
    # and through the header the same
    assert first_message_or_close(path, headers=token_header(limited.secret)) == (None, 4404)


def test_a_ticket_of_a_token_revoked_since_is_refused():
    execution, _, _ = two_step_run()
    issued = issue(execution.created_by, "read")
    ticket = client_with(issued.secret).post("/api/v1/ws-tickets/").json()["ticket"]
    api_token_revoke(token=issued.token)
    assert first_message_or_close(f"/ws/executions/{execution.id}/?ticket={ticket}") == (None, 4401)


def test_the_event_stream_takes_a_scoped_token_in_the_header():
    execution, _, _ = two_step_run()
    issued = issue(execution.created_by, "read")
    response = client_with(issued.secret).get(f"/api/v1/executions/{execution.id}/events/")
    assert response.status_code == 200 and response.json()["events"][0]["type"] == "snapshot"
    no_read = issue(execution.created_by, "write")
    assert client_with(no_read.secret).get(f"/api/v1/executions/{execution.id}/events/").status_code == 401
