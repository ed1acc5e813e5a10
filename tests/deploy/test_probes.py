"""/livez touches nothing, /readyz checks the dependencies (up/down only for anonymous callers),
both answer a probe that calls by address; /healthz is unchanged."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

PROBE_HOST = "10.244.3.17:8000"  # a pod address: not in ALLOWED_HOSTS


def test_livez_answers_without_touching_the_database(client):
    # No database access is allowed in this test (no django_db mark): a query would raise.
    response = client.get("/livez", HTTP_HOST=PROBE_HOST)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_the_dependencies_and_tells_anonymous_callers_only_up(client):
    response = client.get("/readyz", HTTP_HOST=PROBE_HOST)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_readyz_shows_staff_which_checks_ran(client, staff):
    token, _ = Token.objects.get_or_create(user=staff)
    body = client.get("/readyz", HTTP_HOST=PROBE_HOST, HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert body["status"] == "ok" and body["down"] == []
    assert set(body["checks"]) == {"database", "redis", "object_store", "search"}


@pytest.mark.django_db
def test_readyz_is_503_when_a_dependency_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz", HTTP_HOST=PROBE_HOST)
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


@pytest.mark.django_db
def test_healthz_keeps_the_host_check_and_its_answer(client):
    assert client.get("/healthz", HTTP_HOST=PROBE_HOST).status_code == 400
    assert client.get("/healthz").json() == {"status": "ok"}
