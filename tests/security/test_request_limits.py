"""Request limits (docs/security.md): over-limit bodies are refused before they are read or
spooled, JSON nested too deeply is a 400, and nothing is written by a refused request."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from imageflow.api.parsers import json_depth_exceeds
from registry.models import Pipeline
from tests.api.conftest import client_for, definition
from tests.factories import ComponentFactory, UserFactory
from tests.security.conftest import LIVE_UPLOAD_MAX_BYTES
from tests.security.raw_http import request

MiB = 1024 * 1024


@pytest.fixture
def account(uvicorn_server):
    user = UserFactory()
    ComponentFactory(name="resize", version="1.0.0", runner="builtin",
                     input_schema={"type": "object", "properties": {"width": {"type": "integer"}}})
    return {"Authorization": f"Token {Token.objects.create(user=user).key}"}


def _json_headers(auth: dict, **extra: str) -> dict[str, str]:
    return {**auth, "Content-Type": "application/json", "Connection": "close", **extra}


def test_a_declared_content_length_over_the_limit_is_413_at_once_without_sending_the_body(uvicorn_server, account):
    # given only the head of a 10 GiB upload: no byte of the body is ever sent
    response = request(uvicorn_server.port, "POST", "/api/v1/files/", timeout=5, headers={
        **account, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(10 * 1024**3)})
    # then the answer comes at once, in the API's error shape, and the connection is closed
    assert response.status == 413
    assert response.seconds < 1.0
    assert response.body_bytes_sent == 0
    assert response.json()["type"] == "payload_too_large"
    assert response.json()["status"] == 413
    assert response.headers["connection"] == "close"


def test_a_multipart_body_may_be_as_large_as_the_upload_limit_but_json_may_not(uvicorn_server, account):
    # given a declared size above the JSON limit but within the upload limit
    size = 5 * MiB
    assert settings.API_JSON_MAX_BYTES < size < LIVE_UPLOAD_MAX_BYTES
    # a JSON body of that size is refused before it is read
    refused = request(uvicorn_server.port, "POST", "/api/v1/pipelines/", timeout=5,
                      headers=_json_headers(account, **{"Content-Length": str(size)}))
    assert refused.status == 413 and refused.seconds < 1.0
    # while a multipart body of that size reaches the upload view (which judges its content)
    boundary = "limitsboundary"
    payload = b"\x00" * (size - 200)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    passed = request(uvicorn_server.port, "POST", "/api/v1/files/", body=body, timeout=30, headers={
        **account, "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body)),
        "Connection": "close"})
    assert passed.status == 400, passed.body[:300]
    assert passed.json()["type"] != "payload_too_large"


def test_a_50_mb_json_body_is_413_and_creates_nothing(uvicorn_server, account):
    before = Pipeline.objects.count()
    big = json.dumps({"name": "big", "description": "x" * (50 * 1000 * 1000), "definition": definition()}).encode()
    response = request(uvicorn_server.port, "POST", "/api/v1/pipelines/", timeout=5,
                       headers=_json_headers(account, **{"Content-Length": str(len(big))}))
    assert response.status == 413
    assert response.seconds < 1.0
    assert Pipeline.objects.count() == before


def test_a_chunked_body_over_the_limit_is_cut_off_after_the_limit(uvicorn_server, account):
    before = Pipeline.objects.count()
    # given a chunked JSON body that would go on for 64 MiB
    response = request(uvicorn_server.port, "POST", "/api/v1/pipelines/", chunks=1024, chunk=b" " * (64 * 1024),
                       timeout=20, headers=_json_headers(account, **{"Transfer-Encoding": "chunked"}))
    # then the server answers 413 once past the limit, long before the client is done
    assert response.status == 413
    assert response.json()["type"] == "payload_too_large"
    # what the client managed to send: the limit plus what the socket buffers held
    assert settings.API_JSON_MAX_BYTES < response.body_bytes_sent < settings.API_JSON_MAX_BYTES + 8 * MiB
    assert Pipeline.objects.count() == before


def test_a_chunked_upload_over_the_upload_limit_is_cut_off_after_the_limit(uvicorn_server, account):
    from files.models import File

    before = File.objects.count()
    limit = LIVE_UPLOAD_MAX_BYTES + settings.REQUEST_MULTIPART_OVERHEAD_BYTES
    response = request(uvicorn_server.port, "POST", "/api/v1/files/", chunks=512, chunk=b"\x00" * (64 * 1024),
                       timeout=20, headers={**account, "Content-Type": "multipart/form-data; boundary=x",
                                            "Transfer-Encoding": "chunked", "Connection": "close"})
    assert response.status == 413
    assert response.json()["type"] == "payload_too_large"
    assert limit < response.body_bytes_sent < limit + 8 * MiB
    assert File.objects.count() == before


def test_a_small_chunked_json_body_is_served_as_usual(uvicorn_server, account):
    body = json.dumps({"name": "chunked", "definition": definition()}).encode()
    response = request(uvicorn_server.port, "POST", "/api/v1/pipelines/", chunks=1, chunk=body, timeout=10,
                       headers=_json_headers(account, **{"Transfer-Encoding": "chunked"}))
    assert response.status == 201, response.body[:500]
    assert Pipeline.objects.filter(name="chunked").count() == 1


def test_json_nested_5000_deep_is_400_over_http_and_creates_nothing(uvicorn_server, account):
    before = Pipeline.objects.count()
    deep = b'{"name": "deep", "definition": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = request(uvicorn_server.port, "POST", "/api/v1/pipelines/", body=deep, timeout=5,
                       headers=_json_headers(account, **{"Content-Length": str(len(deep))}))
    assert response.status == 400
    assert response.json()["type"] == "json_too_deep"
    assert Pipeline.objects.count() == before


# --- the same rules without the ASGI layer (Django's test client, WSGI) -----------------------

@pytest.mark.django_db
def test_json_over_the_limit_is_413_through_django_too():
    api = client_for(UserFactory())
    body = json.dumps({"name": "big", "description": "x" * (settings.API_JSON_MAX_BYTES + 1)})
    response = api.post("/api/v1/pipelines/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["type"] == "payload_too_large"
    assert Pipeline.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("depth, status", [(settings.API_JSON_MAX_DEPTH, 400), (settings.API_JSON_MAX_DEPTH + 1, 400)])
def test_nesting_at_the_limit_reaches_validation_and_one_deeper_is_refused(depth, status):
    api = client_for(UserFactory())
    # the document itself is one level, so `definition` nests depth - 1 more
    body = '{"name": "n", "definition": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    response = api.post("/api/v1/pipelines/", body, content_type="application/json")
    assert response.status_code == status
    expected_type = "validation_error" if depth <= settings.API_JSON_MAX_DEPTH else "json_too_deep"
    assert response.json()["type"] == expected_type


@pytest.mark.django_db
@pytest.mark.parametrize("body, content_type, status, type_", [
    ('{"name": ', "application/json", 400, "parse_error"),
    ("[" * 100_000, "application/json", 400, "json_too_deep"),
    ("name=x", "text/plain", 415, "unsupported_media_type"),
])
def test_malformed_json_and_wrong_content_types_stay_clear_4xx(body, content_type, status, type_):
    api = client_for(UserFactory())
    response = api.post("/api/v1/pipelines/", body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["type"] == type_
    assert Pipeline.objects.count() == 0


@pytest.mark.parametrize("text, limit, exceeds", [
    ("[[[]]]", 3, False),
    ("[[[[]]]]", 3, True),
    ('{"a": [{"b": [1, 2]}, {"c": 3}]}', 4, False),
    ('{"a": [{"b": [1, 2]}, {"c": 3}]}', 3, True),
    # brackets inside strings (and escaped quotes) are not nesting
    ('["[[[[[[", "\\"[[[[[", "]]]]]"]', 2, False),
    ('[' * 10 + ']' * 10, 10, False),
    ('[' * 11 + ']' * 11, 10, True),
    # a flat list of many small lists is shallow, however many brackets
    ("[" + ",".join(["[1]"] * 10_000) + "]", 2, False),
])
def test_json_depth_is_measured_outside_strings(text, limit, exceeds):
    assert json_depth_exceeds(text, limit) is exceeds


@pytest.mark.django_db
@pytest.mark.parametrize("text", [
    "[" * 5000 + "]" * 5000,  # JSON text
    "workflow: " + "[" * 3000 + "]" * 3000,  # YAML (flow style)
])
def test_a_workflow_import_given_as_deep_text_is_400_not_a_recursion_error(text):
    from registry.models import Workflow

    api = client_for(UserFactory())
    response = api.post("/api/v1/workflows/import/", {"document": text}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert "nested deeper than" in " ".join(response.json()["errors"]["document"])
    assert Workflow.objects.count() == 0
