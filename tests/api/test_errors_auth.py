"""Cross-cutting contract: authentication, token endpoint, the error shape, healthz."""

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db

ERROR_KEYS = {"type", "title", "status", "detail", "errors"}


def test_unauthenticated_request_is_401_in_the_error_shape(anon):
    response = anon.get("/api/v1/pipelines/")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["status"] == 401 and body["type"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Token")


def test_token_obtain_then_use(anon, owner):
    # given a user with a password; when they ask for a token
    response = anon.post("/api/v1/auth/token/", {"username": owner.username, "password": "pw-for-tests-123"},
                         format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    # then the token authenticates API calls
    anon.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anon.get("/api/v1/pipelines/").status_code == 200


def test_token_obtain_with_wrong_password_is_400(anon, owner):
    response = anon.post("/api/v1/auth/token/", {"username": owner.username, "password": "nope"}, format="json")
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert response.json()["errors"]["non_field_errors"]


def test_token_revoke(api, owner):
    assert api.delete("/api/v1/auth/token/").status_code == 204
    assert api.get("/api/v1/pipelines/").status_code == 401


def test_session_authentication_works_for_the_browsable_api(client, owner):
    client.force_login(owner)
    assert client.get("/api/v1/pipelines/").status_code == 200


def test_unknown_api_url_is_json_404(api):
    response = api.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"
    assert set(response.json()) == ERROR_KEYS


def test_method_not_allowed_is_json_405(api):
    response = api.put("/api/v1/executions/", {}, format="json")
    assert response.status_code == 405
    assert response.json()["type"] == "method_not_allowed"


def test_malformed_json_is_400(api):
    response = api.generic("POST", "/api/v1/pipelines/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["type"] == "parse_error"


def test_unhandled_exception_is_json_500(api, monkeypatch):
    from registry import selectors

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "pipeline_list", explode)
    response = api.get("/api/v1/pipelines/")
    assert response.status_code == 500
    body = response.json()
    assert body["type"] == "server_error" and "boom" not in body["detail"]


def test_schema_and_docs_need_no_authentication(anon):
    schema = anon.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ["/api/v1/pipelines/{id}/run/", "/api/v1/files/", "/api/v1/executions/", "/api/v1/components/",
                 "/api/v1/pipelines/{id}/versions/{version}/", "/api/v1/executions/{id}/cancel/"]:
        assert path in paths
    docs = anon.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content and b"cdn" not in docs.content.lower()


def test_healthz_all_up_shows_anonymous_callers_only_the_status(anon, api):
    # anonymous, and a signed-in user who is not staff: up or down, nothing more
    for caller in (anon, api):
        response = caller.get("/healthz")
        assert response.status_code == 200, response.json()
        assert response.json() == {"status": "ok"}


def test_healthz_shows_staff_every_check_by_token_or_session(staff_api, staff_client):
    for caller in (staff_api, staff_client):
        response = caller.get("/healthz")
        assert response.status_code == 200, response.json()
        body = response.json()
        assert body["status"] == "ok" and body["down"] == []
        assert set(body["checks"]) == {"database", "redis", "object_store", "search"}


@override_settings(REDIS_URL="redis://127.0.0.1:1/0", ELASTICSEARCH_URL="http://127.0.0.1:1")
def test_healthz_down_is_503_and_only_staff_learn_what_and_where(anon, staff_api):
    anonymous = anon.get("/healthz")
    assert anonymous.status_code == 503
    # no dependency names, hosts or ports for anyone who can reach the URL
    assert anonymous.json() == {"status": "unavailable"}
    assert b"127.0.0.1" not in anonymous.content

    response = staff_api.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert sorted(body["down"]) == ["redis", "search"]
    assert body["checks"]["database"]["ok"] and body["checks"]["object_store"]["ok"]
    assert "Error" in body["checks"]["redis"]["error"]


@override_settings(DEBUG=True)
def test_django_404_under_api_is_json_even_with_debug_on(api):
    response = api.get("/api/v1/definitely/not/here/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["type"] == "not_found" and "/api/v1/definitely/not/here/" in response.json()["detail"]


def test_healthz_rejects_other_methods_in_the_error_shape(anon):
    response = anon.post("/healthz")
    assert response.status_code == 405 and response.json()["type"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"


def test_pages_outside_the_api_keep_django_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")
