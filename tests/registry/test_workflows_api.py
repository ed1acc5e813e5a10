"""The nested workflow API: create/read/replace/delete in one request and one transaction,
validation, ownership, versions, diffs, restore, 409 on stale updates, idempotent creation."""


import pytest

from imageflow.audit.models import AuditEntry
from registry.models import Workflow, WorkflowNode, WorkflowParam
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db
URL = "/api/v1/workflows/"


def create(api, document=None, **extra):
    response = api.post(URL, {**(document or sample_document()), **extra}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_nested_create_and_read_back(api):
    body = create(api)
    # then: the response and a fresh read carry the whole graph
    read = api.get(f"{URL}{body['id']}/").json()
    assert read["version"] == 1
    assert [n["key"] for n in read["nodes"]] == ["fetch", "summarize", "post"]
    assert read["edges"][0] == {"parent": "fetch", "child": "summarize", "handoff_data": {"field": "html"}}
    assert {p["key"]: p["default_value"] for p in read["params"]} == {"sentences": "3", "url": None}
    assert read["tags"] == ["summaries", "web"] and read["category"] == "content"
    assert read["read_count"] == 1


def test_default_value_given_natively_is_stored_as_its_text(api):
    document = sample_document(params=[{"key": "ratio", "value_type": "float", "default_value": 0.5},
                                       {"key": "flag", "value_type": "bool", "default_value": True},
                                       {"key": "cfg", "value_type": "json", "default_value": {"b": 1, "a": [1]}}])
    body = create(api, document)
    assert {p["key"]: p["default_value"] for p in body["params"]} == {
        "cfg": '{"a": [1], "b": 1}', "flag": "true", "ratio": "0.5"}


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["edges"].append({"parent": "fetch", "child": "ghost"}), "edges.2.child"),
    (lambda d: d["params"].append({"key": "n", "value_type": "int", "default_value": "4.5"}), "params.2.default_value"),
    (lambda d: d["params"].append({"key": "n", "value_type": "decimal"}), "params.2.value_type"),
    (lambda d: d["nodes"].append({"key": "fetch", "node_type": "tool", "name": "again"}), "nodes.3.key"),
    (lambda d: d["edges"].append({"parent": "post", "child": "post"}), "edges.2"),
])
def test_bad_graph_is_400_naming_the_field_and_stores_nothing(api, mutate, field):
    document = sample_document()
    mutate(document)
    response = api.post(URL, document, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error" and field in body["errors"], body
    assert Workflow.objects.count() == 0 and WorkflowNode.objects.count() == 0 and WorkflowParam.objects.count() == 0


def test_edge_cannot_reach_a_node_of_another_workflow(api):
    other = create(api)
    document = sample_document()
    document["edges"] = [{"parent": "fetch", "child": str(other["id"])}]
    response = api.post(URL, document, format="json")
    assert response.status_code == 400 and "edges.0.child" in response.json()["errors"]


def test_other_users_get_404_and_staff_see_all(api, other_api, staff_user):
    from rest_framework.test import APIClient

    body = create(api)
    assert other_api.get(f"{URL}{body['id']}/").status_code == 404
    assert other_api.put(f"{URL}{body['id']}/", {**sample_document(), "version": 1}, format="json").status_code == 404
    assert other_api.get(URL).json()["count"] == 0
    staff = APIClient()
    staff.force_authenticate(staff_user)
    assert staff.get(f"{URL}{body['id']}/").status_code == 200


def test_unauthenticated_is_401():
    from rest_framework.test import APIClient

    assert APIClient().get(URL).status_code == 401


def test_replace_with_version_and_stale_replace_is_409(api):
    body = create(api)
    changed = {**sample_document(name="Renamed"), "version": 1}
    first = api.put(f"{URL}{body['id']}/", changed, format="json")
    assert first.status_code == 200 and first.json()["version"] == 2 and first.json()["name"] == "Renamed"
    # when: another client sends a change based on version 1
    stale = api.put(f"{URL}{body['id']}/", {**sample_document(name="Lost?"), "version": 1}, format="json")
    # then
    assert stale.status_code == 409 and stale.json()["type"] == "version_conflict"
    assert Workflow.objects.get(pk=body["id"]).name == "Renamed"
    # If-Match works as the base version too; no base version at all is a 400
    ok = api.put(f"{URL}{body['id']}/", sample_document(name="Third"), format="json", HTTP_IF_MATCH='"2"')
    assert ok.status_code == 200 and ok.json()["version"] == 3
    missing = api.put(f"{URL}{body['id']}/", sample_document(), format="json")
    assert missing.status_code == 400 and "version" in missing.json()["errors"]


def test_patch_changes_only_the_given_parts(api):
    body = create(api)
    response = api.patch(f"{URL}{body['id']}/", {"version": 1, "tags": ["x"]}, format="json")
    assert response.status_code == 200
    assert response.json()["tags"] == ["x"] and len(response.json()["nodes"]) == 3


def test_versions_diff_and_restore_endpoints(api):
    body = create(api)
    doc = sample_document()
    doc["nodes"][2]["parameters"] = {"channel": "#general"}
    api.put(f"{URL}{body['id']}/", {**doc, "version": 1}, format="json")
    listing = api.get(f"{URL}{body['id']}/versions/").json()
    assert [v["version"] for v in listing["results"]] == [2, 1]
    v1 = api.get(f"{URL}{body['id']}/versions/1/").json()
    assert v1["snapshot"]["nodes"][2]["parameters"] == {"channel": "#news"}
    diff = api.get(f"{URL}{body['id']}/versions/1/diff/2/").json()
    assert diff["nodes"]["changed"] == [{"id": "post", "fields": {"parameters": {
        "from": {"channel": "#news"}, "to": {"channel": "#general"}}}}]
    assert diff["identical"] is False and diff["edges"]["changed"] == []
    assert api.get(f"{URL}{body['id']}/versions/9/").status_code == 404
    restored = api.post(f"{URL}{body['id']}/versions/1/restore/", {}, format="json")
    assert restored.status_code == 200 and restored.json()["version"] == 3
    assert restored.json()["nodes"][2]["parameters"] == {"channel": "#news"}
    assert api.get(f"{URL}{body['id']}/versions/1/diff/3/").json()["identical"] is True


def test_request_id_makes_creation_idempotent(api, other_api):
    first = api.post(URL, {**sample_document(), "request_id": "gen-42"}, format="json")
    again = api.post(URL, {**sample_document(name="different body"), "request_id": "gen-42"}, format="json")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and Workflow.objects.count() == 1
    # the same request_id from another user is another workflow
    assert other_api.post(URL, {**sample_document(), "request_id": "gen-42"}, format="json").status_code == 201


def test_delete_removes_graph_and_is_audited(api):
    body = create(api)
    assert api.delete(f"{URL}{body['id']}/?version=7").status_code == 409
    assert api.delete(f"{URL}{body['id']}/").status_code == 204
    assert not Workflow.objects.filter(pk=body["id"]).exists() and WorkflowNode.objects.count() == 0
    entry = AuditEntry.objects.get(object_id=body["id"], action="delete")
    assert entry.before["name"] == "Summarize a web page" and entry.source == "api"


def test_tag_category_and_node_type_filters(api):
    create(api, sample_document(name="A", tags=["red"], category="x"))
    create(api, sample_document(name="B", tags=["red", "blue"], category="y"))
    names = lambda q: sorted(w["name"] for w in api.get(URL + q).json()["results"])  # noqa: E731
    assert names("?tag=red") == ["A", "B"]
    assert names("?tag=red&tag=blue") == ["B"]
    assert names("?category=x") == ["A"]
    assert names("?node_type=agent") == ["A", "B"] and names("?node_type=robot") == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_with_one_request_id_make_one_workflow():
    import threading

    from django.db import connection

    from registry.workflow_services import workflow_create
    from tests.factories import UserFactory

    user = UserFactory()
    barrier = threading.Barrier(4)
    ids, errors = [], []

    def create_once() -> None:
        try:
            barrier.wait(timeout=10)
            workflow, _ = workflow_create(user=user, data=sample_document(), request_id="same-request")
            ids.append(workflow.pk)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create_once) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == [] and len(ids) == 4 and len(set(ids)) == 1
    assert Workflow.objects.filter(created_by=user).count() == 1
