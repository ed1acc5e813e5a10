"""Scoped API tokens through the API: created once with the secret shown, hashed at rest, held to
their scopes, their organization, their expiry and their revocation; the legacy token unchanged."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from imageflow.accounts.models import ApiToken
from registry import services as registry_services
from tests.accounts.conftest import client_with
from tests.api.conftest import client_for, definition
from tests.factories import FileFactory, MembershipFactory, OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def pipeline(owner, resize):
    return registry_services.pipeline_create(name="thumbs", definition=definition(), created_by=owner)


# --- create, list, hashed at rest -----------------------------------------------------------------

def test_create_shows_the_secret_once_and_the_list_never(api, owner):
    response = api.post("/api/v1/tokens/", {"name": "ci", "scopes": ["read", "run"]}, format="json")

    assert response.status_code == 201
    body = response.json()
    secret = body["token"]
    assert secret.startswith(body["prefix"] + "_") and body["prefix"].startswith("ifk_")
    assert (body["name"], body["scopes"], body["organization"], body["revoked_at"]) == ("ci", ["read", "run"], None, None)
    assert response["Cache-Control"] == "no-store"
    listed = api.get("/api/v1/tokens/").json()["results"]
    assert [row["id"] for row in listed] == [body["id"]]
    assert "token" not in listed[0] and secret not in str(listed)
    assert "token" not in api.get(f"/api/v1/tokens/{body['id']}/").json()
    # the secret works
    assert client_with(secret).get("/api/v1/pipelines/").status_code == 200


def test_the_database_row_holds_a_hash_and_not_the_secret(api):
    secret = api.post("/api/v1/tokens/", {"name": "ci", "scopes": ["read"]}, format="json").json()["token"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_tokens::text FROM api_tokens")
        (row_text,) = cursor.fetchone()
    assert secret not in row_text
    assert secret.split("_", 2)[2] not in row_text  # not even the random part
    assert hashlib.sha256(secret.encode()).hexdigest() in row_text


def test_the_list_shows_last_use_and_the_requests_of_the_current_window(api, owner, scoped, settings):
    settings.API_TOKEN_RATE_LIMIT = "100/hour"  # a window the test will not straddle
    token, client = scoped(owner, "read")
    assert api.get("/api/v1/tokens/").json()["results"][0]["last_used_at"] is None

    for _ in range(3):
        assert client.get("/api/v1/files/").status_code == 200
    row = api.get(f"/api/v1/tokens/{token.pk}/").json()

    token.refresh_from_db()
    assert token.last_used_at is not None and row["last_used_at"] is not None
    assert row["usage"] == {"requests": 3, "limit": 100, "window_seconds": 3600}


def test_last_use_is_written_at_most_once_a_minute(owner, scoped):
    token, client = scoped(owner, "read")
    client.get("/api/v1/files/")
    token.refresh_from_db()
    first = token.last_used_at

    client.get("/api/v1/files/")
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: not written again

    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(seconds=61))
    client.get("/api/v1/files/")
    token.refresh_from_db()
    assert token.last_used_at > first


def test_scopes_and_names_are_validated(api, owner):
    bad = api.post("/api/v1/tokens/", {"name": "x", "scopes": ["read", "sudo"]}, format="json")
    assert bad.status_code == 400 and "scopes.1" in bad.json()["errors"]
    assert api.post("/api/v1/tokens/", {"name": "x", "scopes": []}, format="json").status_code == 400
    past = api.post("/api/v1/tokens/", {"name": "x", "scopes": ["read"],
                                        "expires_at": (timezone.now() - timedelta(minutes=1)).isoformat()}, format="json")
    assert past.json()["errors"] == {"expires_at": ["Must be in the future."]}
    assert api.post("/api/v1/tokens/", {"name": "x", "scopes": ["read"]}, format="json").status_code == 201
    again = api.post("/api/v1/tokens/", {"name": "x", "scopes": ["read"]}, format="json")
    assert again.status_code == 400 and "name" in again.json()["errors"]


def test_an_organization_one_is_not_a_member_of_is_no_such_organization(api):
    foreign = OrganizationFactory()
    missing = "00000000-0000-0000-0000-000000000001"
    for org_id in (str(foreign.pk), missing):
        response = api.post("/api/v1/tokens/", {"name": "o", "scopes": ["read"], "organization": org_id}, format="json")
        assert response.status_code == 400
        assert response.json()["errors"] == {"organization": [f"No such organization: {org_id}."]}


def test_tokens_of_others_are_not_found(api, stranger, scoped):
    theirs, _ = scoped(stranger, "read")
    assert api.get(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
    assert api.delete(f"/api/v1/tokens/{theirs.pk}/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


# --- scopes -----------------------------------------------------------------------------------------

def test_a_read_token_reads_and_gets_403_naming_the_missing_scope_on_a_write(owner, pipeline, scoped):
    _, client = scoped(owner, "read")

    assert client.get(f"/api/v1/pipelines/{pipeline.pk}/").json()["name"] == "thumbs"
    response = client.patch(f"/api/v1/pipelines/{pipeline.pk}/", {"name": "renamed"}, format="json")

    assert response.status_code == 403
    assert response.json()["type"] == "missing_scope"
    assert "'write' scope" in response.json()["detail"] and "it has: read" in response.json()["detail"]
    pipeline.refresh_from_db()
    assert pipeline.name == "thumbs"


def test_a_run_token_runs_and_cancels_but_cannot_edit(owner, pipeline, scoped):
    _, client = scoped(owner, "read", "run")
    image = FileFactory(created_by=owner)

    started = client.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": [str(image.pk)]}, format="json")
    assert started.status_code == 202
    assert client.post(f"/api/v1/executions/{started.json()['id']}/cancel/").json()["status"] == "cancelled"

    edit = client.patch(f"/api/v1/pipelines/{pipeline.pk}/", {"name": "renamed"}, format="json")
    assert edit.status_code == 403 and "'write' scope" in edit.json()["detail"]
    assert client.delete(f"/api/v1/files/{image.pk}/").status_code == 403


def test_a_write_token_cannot_run_without_the_run_scope(owner, pipeline, scoped):
    _, client = scoped(owner, "write")
    image = FileFactory(created_by=owner)
    response = client.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": [str(image.pk)]}, format="json")
    assert response.status_code == 403 and "'run' scope" in response.json()["detail"]
    assert client.patch(f"/api/v1/pipelines/{pipeline.pk}/", {"name": "renamed"}, format="json").status_code == 200


def test_only_an_admin_scoped_token_manages_tokens(owner, scoped):
    _, writer = scoped(owner, "read", "write")
    _, admin = scoped(owner, "admin")

    denied = writer.post("/api/v1/tokens/", {"name": "wider", "scopes": ["admin"]}, format="json")
    assert denied.status_code == 403 and "'admin' scope" in denied.json()["detail"]
    assert admin.post("/api/v1/tokens/", {"name": "ci", "scopes": ["read"]}, format="json").status_code == 201


def test_the_legacy_token_keeps_full_scope(api, owner, pipeline):
    image = FileFactory(created_by=owner)
    assert api.patch(f"/api/v1/pipelines/{pipeline.pk}/", {"name": "renamed"}, format="json").status_code == 200
    assert api.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": [str(image.pk)]}, format="json").status_code == 202
    assert api.post("/api/v1/tokens/", {"name": "ci", "scopes": ["read"]}, format="json").status_code == 201


# --- expiry and revocation ----------------------------------------------------------------------------

def test_an_expired_token_is_401(owner, scoped):
    token, client = scoped(owner, "read", expires_at=timezone.now() + timedelta(hours=1))
    assert client.get("/api/v1/files/").status_code == 200

    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/files/")

    assert response.status_code == 401
    assert response.json()["detail"] == "Token expired."
    assert response["WWW-Authenticate"] == "Token"


def test_a_revoked_token_is_401_and_stays_listed_as_revoked(api, owner, scoped):
    token, client = scoped(owner, "read")
    assert client.get("/api/v1/files/").status_code == 200

    assert api.delete(f"/api/v1/tokens/{token.pk}/").status_code == 204

    response = client.get("/api/v1/files/")
    assert (response.status_code, response.json()["detail"]) == (401, "Token revoked.")
    assert api.get(f"/api/v1/tokens/{token.pk}/").json()["revoked_at"] is not None


def test_delete_auth_token_with_a_scoped_token_revokes_that_token_only(api, owner, scoped):
    token, client = scoped(owner, "read")
    assert client.delete("/api/v1/auth/token/").status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api.get("/api/v1/files/").status_code == 200  # the legacy token still works


def test_a_made_up_scoped_token_is_401(db):
    assert client_with("ifk_00000000_made-up").get("/api/v1/files/").status_code == 401


# --- organization limit ------------------------------------------------------------------------------

def test_an_organization_token_sees_that_organization_and_not_personal_rows(owner, resize, scoped):
    org = OrganizationFactory()
    other_org = OrganizationFactory()
    MembershipFactory(user=owner, organization=org)
    MembershipFactory(user=owner, organization=other_org)
    shared = registry_services.pipeline_create(name="shared", definition=definition(), created_by=owner)
    shared.organization = org
    shared.save(update_fields=["organization"])
    elsewhere = registry_services.pipeline_create(name="elsewhere", definition=definition(), created_by=owner)
    elsewhere.organization = other_org
    elsewhere.save(update_fields=["organization"])
    personal = registry_services.pipeline_create(name="personal", definition=definition(), created_by=owner)
    image = FileFactory(created_by=owner)
    _, client = scoped(owner, "read", "write", organization=org)

    assert [row["name"] for row in client.get("/api/v1/pipelines/").json()["results"]] == ["shared"]
    assert client.get(f"/api/v1/pipelines/{shared.pk}/").status_code == 200
    assert client.get(f"/api/v1/pipelines/{personal.pk}/").status_code == 404
    assert client.get(f"/api/v1/pipelines/{elsewhere.pk}/").status_code == 404
    assert client.patch(f"/api/v1/pipelines/{personal.pk}/", {"name": "x"}, format="json").status_code == 404
    # files have no organization: all personal
    assert client.get(f"/api/v1/files/{image.pk}/").status_code == 404
    assert client.get("/api/v1/files/").json()["results"] == []
    # the same user's legacy token still sees them all
    assert client_for(owner).get(f"/api/v1/pipelines/{personal.pk}/").status_code == 200


def test_an_organization_token_of_staff_is_limited_too(resize, scoped):
    staff = UserFactory(is_staff=True, is_superuser=True)
    org = OrganizationFactory()
    MembershipFactory(user=staff, organization=org)
    someone = UserFactory()
    theirs = registry_services.pipeline_create(name="theirs", definition=definition(), created_by=someone)
    _, client = scoped(staff, "read", organization=org)
    assert client.get(f"/api/v1/pipelines/{theirs.pk}/").status_code == 404
    assert client_for(staff).get(f"/api/v1/pipelines/{theirs.pk}/").status_code == 200
