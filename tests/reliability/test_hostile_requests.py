"""Scenario 7: hostile requests. Each is answered with a clear 4xx in the API's error shape
(imageflow/api/errors.py), never a 5xx, and leaves the row count of every table unchanged.

The cases: graphs that are not DAGs (cycles, self-loops), a 10,000-node DAG, unknown components,
wrong and extra parameters, names with `../`, NUL, 1,000 characters and bidi overrides (the name
rule of imageflow/validators.py) for pipelines, components, workflows and workflow nodes, invalid
UUIDs in paths, bodies and queries, malformed JSON, wrong content types, and uploads that are
not images: a decompression bomb (a PNG whose header declares 50,000 x 50,000 pixels), HTML and
zip files, an empty file, a file name of 1,000 characters (over Django's multipart header limit). Uploads whose *name* is hostile, and polyglots that are valid images,
are accepted: the name is reduced to a safe basename, and the bytes are stored as the image type
they decode as (see the second test).
"""

from __future__ import annotations

import io
import json
import struct
import uuid
import zipfile
import zlib
from collections import Counter

import pytest
from django.db import connection
from PIL import Image
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from registry import services as registry_services
from registry.workflow_services import workflow_create
from tests.factories import ComponentFactory, StaffFactory, UserFactory
from tests.reliability import report

pytestmark = [pytest.mark.django_db]

API = "/api/v1/"
BAD_NAMES = {
    "traversal": "../../etc/passwd",
    "NUL": "before\x00after",
    "1,000 characters": "n" * 1000,
    "RTL override": "invoice\u202egnp.exe",
    "bidi isolate": "left\u2066right\u2069",
    "control character": "bell\x07",
}
INVALID_UUIDS = ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g", "%00", "..%2F..%2Fetc"]
BOUNDARY = "hostile-boundary"


# --- what the requests are made of ---------------------------------------------------------------

def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def node(node_id: str, *, component: str = "hostile-resize", version: str = "1.0.0", **parameters) -> dict:
    return {"id": node_id, "component": {"name": component, "version": version},
            "parameters": parameters or {"width": 8}}


def pipeline_body(*, name: str = "hostile", nodes: list | None = None, edges: list | None = None) -> dict:
    return {"name": name, "definition": {"nodes": nodes if nodes is not None else [node("a")],
                                         "edges": edges or []}}


def chain(count: int) -> dict:
    ids = [f"n{i}" for i in range(count)]
    return pipeline_body(name="huge", nodes=[node(i) for i in ids],
                         edges=[{"from": a, "to": b} for a, b in zip(ids, ids[1:])])


def workflow_doc(*, name: str = "hostile workflow", nodes: list | None = None, edges: list | None = None) -> dict:
    return {"name": name, "nodes": nodes if nodes is not None else [{"key": "a", "node_type": "tool", "name": "A"}],
            "edges": edges or [], "params": []}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def decompression_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height 8-bit grey pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


def image_bytes(fmt: str, size=(16, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<script>alert(1)</script>")
    return buffer.getvalue()


HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def multipart(content: bytes, *, filename: str, field: str = "file", content_type: str = "image/png") -> bytes:
    """A multipart body built by hand: Django's test client would strip the name to its basename
    itself, and the point is what the server does with the name the client sent."""
    disposition = f'form-data; name="{field}"; filename="{filename}"'.encode("utf-8", "surrogatepass")
    return (f"--{BOUNDARY}\r\n".encode() + b"Content-Disposition: " + disposition + b"\r\n"
            + f"Content-Type: {content_type}\r\n\r\n".encode() + content + f"\r\n--{BOUNDARY}--\r\n".encode())


def upload(client: APIClient, content: bytes, *, filename: str = "upload.png", field: str = "file"):
    return client.generic("POST", f"{API}files/", multipart(content, filename=filename, field=field),
                          content_type=f"multipart/form-data; boundary={BOUNDARY}")


def row_counts() -> dict[str, int]:
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        cursor.execute(" UNION ALL ".join(f"SELECT '{t}', count(*) FROM \"{t}\"" for t in tables))
        return dict(cursor.fetchall())


@pytest.fixture
def world(db):
    user = UserFactory()
    component = ComponentFactory(
        name="hostile-resize", version="1.0.0", runner="builtin",
        input_schema={"type": "object", "properties": {"width": {"type": "integer", "minimum": 1}},
                      "required": ["width"], "additionalProperties": False})
    pipeline = registry_services.pipeline_create(name="target", definition=pipeline_body()["definition"],
                                                 created_by=user)
    workflow, _ = workflow_create(user=user, data={**workflow_doc(name="target workflow"), "params": [
        {"key": "caption", "value_type": "string", "required": False, "default_value": "hi"}]})
    return {"user": user, "api": client_for(user), "staff": client_for(StaffFactory()), "component": component,
            "pipeline": pipeline, "workflow": workflow}


def hostile_requests(world) -> list[tuple[str, str, str, dict, str]]:
    """(label, client, method, path, keyword arguments) of every hostile request."""
    p, w, c = world["pipeline"].pk, world["workflow"].pk, world["component"].pk
    cases: list[tuple[str, str, str, str, dict]] = []

    def json_case(label, method, path, body, who="api"):
        cases.append((label, who, method, path, {"data": json.dumps(body), "content_type": "application/json"}))

    def raw_case(label, method, path, body: bytes | str, content_type, who="api"):
        cases.append((label, who, method, path, {"data": body, "content_type": content_type}))

    # -- graphs
    json_case("pipeline: cycle a -> b -> a", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a"), node("b")], edges=[{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]))
    json_case("pipeline: cycle of three", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a"), node("b"), node("c")],
        edges=[{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "a"}]))
    json_case("pipeline: self-loop", "post", f"{API}pipelines/", pipeline_body(edges=[{"from": "a", "to": "a"}]))
    json_case("pipeline: 10,000-node DAG", "post", f"{API}pipelines/", chain(10_000))
    json_case("pipeline update: 10,000-node DAG", "put", f"{API}pipelines/{p}/", chain(10_000))
    json_case("pipeline: dangling edge", "post", f"{API}pipelines/", pipeline_body(edges=[{"from": "a", "to": "zz"}]))
    json_case("pipeline: duplicate node ids", "post", f"{API}pipelines/", pipeline_body(nodes=[node("a"), node("a")]))
    json_case("pipeline: no nodes", "post", f"{API}pipelines/", pipeline_body(nodes=[]))
    json_case("pipeline: definition is a list", "post", f"{API}pipelines/", {"name": "x", "definition": []})
    json_case("pipeline: node is a string", "post", f"{API}pipelines/", pipeline_body(nodes=["a"]))
    json_case("pipeline: unknown component", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a", component="rm-rf")]))
    json_case("pipeline: unknown component version", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a", version="9.9.9")]))
    json_case("pipeline: wrong parameter type", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a", width="wide")]))
    json_case("pipeline: parameter out of range", "post", f"{API}pipelines/", pipeline_body(nodes=[node("a", width=-5)]))
    json_case("pipeline: missing required parameter", "post", f"{API}pipelines/", pipeline_body(
        nodes=[{"id": "a", "component": {"name": "hostile-resize", "version": "1.0.0"}, "parameters": {}}]))
    json_case("pipeline: extra parameter", "post", f"{API}pipelines/", pipeline_body(
        nodes=[node("a", width=8, command="rm -rf /")]))
    json_case("pipeline: parameters not an object", "post", f"{API}pipelines/", pipeline_body(
        nodes=[{"id": "a", "component": {"name": "hostile-resize", "version": "1.0.0"}, "parameters": [1]}]))
    json_case("pipeline: unknown node key", "post", f"{API}pipelines/", pipeline_body(
        nodes=[{**node("a"), "shell": "sh"}]))
    json_case("run: parameters for an unknown node", "post", f"{API}pipelines/{p}/run/",
              {"inputs": [], "parameters": {"nope": {"width": 1}}})
    json_case("run: wrong parameter type", "post", f"{API}pipelines/{p}/run/",
              {"inputs": [], "parameters": {"a": {"width": "wide"}}})
    json_case("run: extra parameter", "post", f"{API}pipelines/{p}/run/",
              {"inputs": [], "parameters": {"a": {"width": 8, "command": "id"}}})
    json_case("run: parameters not an object", "post", f"{API}pipelines/{p}/run/", {"inputs": [], "parameters": "x"})
    json_case("workflow: self-loop", "post", f"{API}workflows/", workflow_doc(edges=[{"parent": "a", "child": "a"}]))
    json_case("workflow: edge to an unknown node", "post", f"{API}workflows/",
              workflow_doc(edges=[{"parent": "a", "child": "zz"}]))
    json_case("workflow: 10,000 nodes", "post", f"{API}workflows/", workflow_doc(
        nodes=[{"key": f"k{i}", "node_type": "tool", "name": f"N{i}"} for i in range(10_000)]))
    json_case("workflow apply: wrong param", "post", f"{API}workflows/{w}/apply/", {"params": {"nope": 1}})

    # -- names
    for label, bad in BAD_NAMES.items():
        json_case(f"pipeline name: {label}", "post", f"{API}pipelines/", pipeline_body(name=bad))
        json_case(f"pipeline rename: {label}", "patch", f"{API}pipelines/{p}/", {"name": bad})
        json_case(f"pipeline clone name: {label}", "post", f"{API}pipelines/{p}/clone/", {"name": bad})
        json_case(f"component name: {label}", "post", f"{API}components/", {
            "name": bad, "version": "1.0.0", "docker_image": "example/x:1"}, who="staff")
        json_case(f"component rename: {label}", "patch", f"{API}components/{c}/", {"name": bad}, who="staff")
        json_case(f"workflow name: {label}", "post", f"{API}workflows/", workflow_doc(name=bad))
        json_case(f"workflow node name: {label}", "post", f"{API}workflows/", workflow_doc(
            nodes=[{"key": "a", "node_type": "tool", "name": bad}]))
        json_case(f"workflow rename: {label}", "patch", f"{API}workflows/{w}/", {"name": bad, "version": 1})
        json_case(f"workflow import name: {label}", "post", f"{API}workflows/import/",
                  {"format": "imageflow", "document": workflow_doc(name=bad)})
        json_case(f"pipeline import name: {label}", "post", f"{API}pipelines/import/", {
            "format": "imageflow.pipeline", "format_version": 1,
            "pipeline": {"name": bad, "definition": pipeline_body()["definition"]}})

    # -- NUL inside JSON (PostgreSQL's jsonb and text cannot store U+0000)
    json_case("pipeline: NUL in a node id", "post", f"{API}pipelines/", pipeline_body(nodes=[node("a\x00")]))
    json_case("pipeline: NUL in a parameter key", "post", f"{API}pipelines/", {"name": "x", "definition": {
        "nodes": [{"id": "a", "component": {"name": "hostile-resize", "version": "1.0.0"},
                   "parameters": {"width": 8, "\x00": 1}}], "edges": []}})
    json_case("pipeline: NUL in the description", "post", f"{API}pipelines/", {**pipeline_body(), "description": "a\x00"})
    json_case("workflow: NUL in node parameters", "post", f"{API}workflows/", workflow_doc(
        nodes=[{"key": "a", "node_type": "tool", "name": "A", "parameters": {"prompt": "x\x00y"}}]))
    json_case("workflow: NUL in metadata", "post", f"{API}workflows/", {**workflow_doc(), "metadata": {"k\x00": 1}})
    json_case("workflow: NUL in the description", "post", f"{API}workflows/", {**workflow_doc(), "description": "\x00"})
    json_case("workflow: NUL in a node key", "post", f"{API}workflows/", workflow_doc(
        nodes=[{"key": "a\x00", "node_type": "tool", "name": "A"}]))
    json_case("workflow: NUL in a tag", "post", f"{API}workflows/", {**workflow_doc(), "tags": ["t\x00"]})
    json_case("workflow apply: NUL in a param value", "post", f"{API}workflows/{w}/apply/", {"params": {"x": "\x00"}})
    json_case("run: NUL in an override", "post", f"{API}pipelines/{p}/run/",
              {"inputs": [], "parameters": {"a": {"width": 8, "k\x00": "v"}}})
    cases.append(("run: NUL in the Idempotency-Key header", "api", "post", f"{API}pipelines/{p}/run/", {
        "data": '{"inputs": []}', "content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "k\x00"}))
    cases.append(("apply: Idempotency-Key of 300 characters", "api", "post", f"{API}workflows/{w}/apply/", {
        "data": "{}", "content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "k" * 300}))
    cases.append(("apply: NUL in the Idempotency-Key header", "api", "post", f"{API}workflows/{w}/apply/", {
        "data": "{}", "content_type": "application/json", "HTTP_IDEMPOTENCY_KEY": "k\x00"}))
    json_case("apply: NUL in a declared string param", "post", f"{API}workflows/{w}/apply/",
              {"params": {"caption": "a\x00b"}})
    json_case("component: NUL in the input schema", "post", f"{API}components/", {
        "name": "nul-schema", "version": "1.0.0", "docker_image": "example/x:1",
        "input_schema": {"type": "object", "description": "\x00"}}, who="staff")

    # -- numbers JSON can spell but PostgreSQL's jsonb cannot hold (1e400 parses as infinity)
    raw_case("workflow: 1e400 in metadata", "post", f"{API}workflows/",
             json.dumps(workflow_doc())[:-1] + ', "metadata": {"x": 1e400}}', "application/json")
    raw_case("workflow: -1e400 in node parameters", "post", f"{API}workflows/", json.dumps(workflow_doc(
        nodes=[{"key": "a", "node_type": "tool", "name": "A", "parameters": {"p": "__N__"}}])).replace(
        '"__N__"', "-1e400"), "application/json")
    raw_case("pipeline: 1e400 as a parameter", "post", f"{API}pipelines/",
             json.dumps(pipeline_body()).replace('"width": 8', '"width": 1e400'), "application/json")
    raw_case("component: 1e400 in resource requirements", "post", f"{API}components/", json.dumps({
        "name": "inf", "version": "1.0.0", "docker_image": "example/x:1", "resource_requirements": {"cpu": "__N__"}}
    ).replace('"__N__"', "1e400"), "application/json", who="staff")

    # -- invalid UUIDs
    for bad in INVALID_UUIDS:
        for kind in ("pipelines", "executions", "files", "workflows", "components"):
            cases.append((f"{kind} path id {bad!r}", "api", "get", f"{API}{kind}/{bad}/", {}))
    cases.append(("run path id", "api", "post", f"{API}pipelines/not-a-uuid/run/", {"data": "{}",
                                                                                   "content_type": "application/json"}))
    cases.append(("events path id", "api", "get", f"{API}executions/not-a-uuid/events/", {}))
    json_case("run: input id not a UUID", "post", f"{API}pipelines/{p}/run/", {"inputs": ["not-a-uuid"]})
    json_case("run: input id of no file", "post", f"{API}pipelines/{p}/run/", {"inputs": [str(uuid.uuid4())]})
    json_case("run: inputs not a list", "post", f"{API}pipelines/{p}/run/", {"inputs": "x"})
    json_case("apply: input id not a UUID", "post", f"{API}workflows/{w}/apply/", {"inputs": ["nope"]})
    json_case("apply: input id of no file", "post", f"{API}workflows/{w}/apply/", {"inputs": [str(uuid.uuid4())]})
    json_case("workflow: organization not a UUID", "post", f"{API}workflows/",
              {**workflow_doc(), "organization": "nope"})
    json_case("workflow: unknown organization", "post", f"{API}workflows/",
              {**workflow_doc(), "organization": str(uuid.uuid4())})
    json_case("similar: workflow not a UUID", "post", f"{API}workflows/similar/", {"workflow": "nope"})
    json_case("labels: organization not a UUID", "put", f"{API}pipelines/{p}/labels/", {"organization": "nope"})
    cases.append(("workflows ?organization= not a UUID", "api", "get", f"{API}workflows/?organization=nope", {}))
    cases.append(("executions ?pipeline= not a UUID", "api", "get", f"{API}executions/?pipeline=nope", {}))
    cases.append(("audit log ?object_id= not a UUID", "staff", "get", f"{API}audit-log/?object_id=nope", {}))

    # -- malformed JSON and wrong content types
    for label, text in (("truncated", '{"name": "x", '), ("trailing garbage", '{"name": "x"} }'),
                        ("NaN", '{"name": NaN}'), ("single quotes", "{'name': 'x'}"), ("not UTF-8", b"\xff\xfe{")):
        raw_case(f"malformed JSON ({label}): pipeline", "post", f"{API}pipelines/", text, "application/json")
        raw_case(f"malformed JSON ({label}): workflow", "post", f"{API}workflows/", text, "application/json")
    raw_case("JSON array body: pipeline", "post", f"{API}pipelines/", "[1, 2]", "application/json")
    raw_case("JSON string body: workflow", "post", f"{API}workflows/", '"workflow"', "application/json")
    raw_case("JSON null body: run", "post", f"{API}pipelines/{p}/run/", "null", "application/json")
    raw_case("text/plain: pipeline", "post", f"{API}pipelines/", json.dumps(pipeline_body()), "text/plain")
    raw_case("XML: workflow", "post", f"{API}workflows/", "<workflow/>", "application/xml")
    raw_case("YAML content type: pipeline import", "post", f"{API}pipelines/import/", "name: x", "application/yaml")
    raw_case("JSON to the upload endpoint", "post", f"{API}files/", "{}", "application/json")
    raw_case("form: definition is text", "post", f"{API}pipelines/", "name=x&definition=nodes",
             "application/x-www-form-urlencoded")
    raw_case("multipart without a boundary", "post", f"{API}files/", b"--x\r\n", "multipart/form-data")
    return cases


def upload_cases() -> list[tuple[str, bytes, dict]]:
    """Uploads whose bytes are not an acceptable image."""
    return [
        ("decompression bomb (PNG declaring 50,000 x 50,000)", decompression_bomb(), {}),
        ("decompression bomb (PNG declaring 100,000 x 1)", decompression_bomb(100_000, 100_000), {}),
        ("HTML", HTML, {"filename": "page.png"}),
        ("HTML behind a GIF signature", b"GIF89a" + HTML, {"filename": "x.gif"}),
        ("zip", zip_bytes(), {"filename": "archive.jpg"}),
        ("empty file", b"", {}),
        ("truncated PNG", image_bytes("PNG")[:40], {}),
        ("PNG under another field name", image_bytes("PNG"), {"field": "image"}),
        # Django's multipart parser refuses part headers over 1,024 bytes: a clear 400, nothing stored.
        ("PNG named with 1,000 characters", image_bytes("PNG"), {"filename": "p" * 1000 + ".png"}),
    ]


def problem_shape(response) -> dict:
    body = response.json()
    assert set(body) >= {"type", "title", "status", "detail", "errors"}, body
    assert body["status"] == response.status_code and body["detail"], body
    return body


def test_hostile_requests_are_clear_4xx_and_change_no_row(world):
    clients = {"api": world["api"], "staff": world["staff"]}
    requests = hostile_requests(world)
    before = row_counts()
    statuses: Counter = Counter()
    for label, who, method, path, kwargs in requests:
        response = clients[who].generic(method.upper(), path, **kwargs) if kwargs else clients[who].get(path)
        assert 400 <= response.status_code < 500, (label, response.status_code, response.content[:400])
        body = problem_shape(response)
        if " name: " in label:  # refused for its name, not for something else in the body
            assert any(key.split(".")[-1] == "name" for key in body["errors"]), (label, body)
        assert row_counts() == before, f"{label}: a refused request changed a table"
        statuses[response.status_code] += 1
    for label, content, options in upload_cases():
        response = upload(world["api"], content, **options)
        assert 400 <= response.status_code < 500, (label, response.status_code, response.content[:400])
        body = problem_shape(response)
        if "bomb" in label:
            assert body["errors"]["file"] and "too many pixels" in body["errors"]["file"][0], body
        assert row_counts() == before, f"{label}: a refused upload changed a table"
        statuses[response.status_code] += 1

    total = sum(statuses.values())
    by_status = ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
    report.record(7, f"{total} hostile requests: {total} answered 4xx ({by_status}), 0 5xx, "
                     f"row counts unchanged in {len(before)} tables after each")


# --- uploads that are accepted: hostile names, polyglots ----------------------------------------

def gif_with_html_comment() -> bytes:
    """A valid GIF whose comment extension is an HTML page (a GIF/HTML polyglot)."""
    buffer = io.BytesIO()
    Image.new("P", (4, 4), 1).save(buffer, format="GIF", comment=HTML)
    return buffer.getvalue()


HOSTILE_FILE_NAMES = {
    "traversal": "../../etc/passwd.png",
    "Windows traversal": "..\\..\\boot.ini.png",
    "NUL": "photo\x00.php.png",
    "900 characters": "p" * 900 + ".png",
    "RTL override": "photo\u202egnp.exe.png",
    "newline": "first\nsecond.png",
}
POLYGLOTS = {
    "GIF that is also HTML": (gif_with_html_comment(), "image/gif"),
    "JPEG with a zip appended": (image_bytes("JPEG") + zip_bytes(), "image/jpeg"),
    "PNG with HTML appended": (image_bytes("PNG") + HTML, "image/png"),
}


def _stored_object_type(file_id) -> str:
    from django.core.files.storage import default_storage

    from files.models import File

    row = File.objects.get(pk=file_id)
    client = default_storage.connection.meta.client
    return client.head_object(Bucket=default_storage.bucket_name, Key=row.storage_path)["ContentType"]


def _added_rows(before: dict[str, int]) -> dict[str, int]:
    return {table: count - before[table] for table, count in row_counts().items() if count != before[table]}


def test_uploads_with_hostile_names_are_stored_under_a_safe_basename(world):
    from imageflow.validators import name_problem

    stored_names = {}
    for label, filename in HOSTILE_FILE_NAMES.items():
        before = row_counts()
        # given an image whose multipart filename is hostile
        response = upload(world["api"], image_bytes("PNG"), filename=filename)
        # then it is accepted (an upload is sanitized, not refused, for its name), one file row is
        # added, and the stored name is a basename within 200 characters that passes the name rule
        assert response.status_code == 201, (label, response.content[:300])
        assert _added_rows(before) == {"files": 1}, label
        stored = response.json()["original_name"]
        assert name_problem(stored, file_name=True) is None, (label, stored)
        assert stored.endswith(".png") and len(stored) <= 200, (label, stored)
        stored_names[label] = stored
    shown = ", ".join(f"{label} → {name if len(name) < 30 else name[:12] + f'…({len(name)} chars)'!r}"
                      for label, name in stored_names.items())
    report.record(7, f"{len(stored_names)} uploads with hostile names: 201, stored as safe basenames ({shown})")


def test_polyglots_that_are_valid_images_are_stored_as_that_image_type(world):
    seen = []
    for label, (content, mime_type) in POLYGLOTS.items():
        before = row_counts()
        response = upload(world["api"], content, filename="polyglot.html")
        # what we answer: 201, typed by the bytes as the image they decode as (never text/html),
        # the name's extension made to agree, and the object in the store carries that type
        assert response.status_code == 201, (label, response.content[:300])
        assert _added_rows(before) == {"files": 1}, label
        body = response.json()
        assert body["mime_type"] == mime_type, (label, body)
        assert not body["original_name"].endswith(".html"), (label, body)
        assert _stored_object_type(body["id"]) == mime_type, label
        assert body["file_size"] == len(content), label  # stored as sent (trailing data kept: files/inspection.py)
        seen.append(f"{label} → {mime_type}")
    report.record(7, f"{len(seen)} polyglots that decode as images: 201, typed and stored as the image "
                     f"({'; '.join(seen)}), bytes kept as sent")


def test_the_name_rule_is_on_the_model_fields_so_admin_forms_refuse_the_same_names(db):
    from django.forms import modelform_factory

    from files.models import File
    from registry.models import Component, Pipeline, Workflow, WorkflowNode

    fields = [(Component, "name"), (Pipeline, "name"), (Workflow, "name"), (WorkflowNode, "name"),
              (File, "original_name")]
    refused = 0
    for model, field in fields:
        form_class = modelform_factory(model, fields=[field])  # what a ModelAdmin builds
        # a plain name passes (so the refusals below are the rule's); a slash only in a file name is refused
        assert form_class(data={field: "Résumé crop 2.png"}).is_valid(), model
        assert form_class(data={field: "Resize / crop"}).is_valid() is (model is not File), model
        for label, bad in BAD_NAMES.items():
            form = form_class(data={field: bad})
            assert not form.is_valid() and field in form.errors, (model.__name__, label)
            refused += 1
    report.record(7, f"name rule on {len(fields)} model fields: {refused} hostile names refused by their "
                     f"admin-style model forms")
