"""Components and pipelines over the API."""

import pytest

from registry.models import Component, Pipeline, PipelineVersion
from tests.api.conftest import definition
from tests.factories import ComponentFactory, PipelineExecutionFactory

pytestmark = pytest.mark.django_db


# --- components ---------------------------------------------------------------------------------

COMPONENT = {"name": "blur", "version": "1.0.0", "docker_image": "example/blur:1", "runner": "builtin",
             "input_schema": {"type": "object", "properties": {"radius": {"type": "number"}}}}


def test_staff_creates_component(staff_api):
    response = staff_api.post("/api/v1/components/", COMPONENT, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["input_schema"]["properties"]["radius"] == {"type": "number"}


def test_invalid_json_schema_is_400_naming_it(staff_api):
    bad = {**COMPONENT, "output_schema": {"type": "no-such-type"}}
    response = staff_api.post("/api/v1/components/", bad, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["output_schema"]
    assert "invalid JSON Schema" in response.json()["errors"]["output_schema"][0]


def test_duplicate_name_version_is_400(staff_api):
    ComponentFactory(name="blur", version="1.0.0")
    response = staff_api.post("/api/v1/components/", COMPONENT, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["errors"]["version"][0]


def test_non_staff_reads_but_cannot_write_components(api, resize):
    assert api.get("/api/v1/components/").json()["results"][0]["name"] == "resize"
    assert api.post("/api/v1/components/", COMPONENT, format="json").status_code == 403
    assert api.delete(f"/api/v1/components/{resize.pk}/").status_code == 403


def test_component_update_and_delete(staff_api, resize):
    response = staff_api.patch(f"/api/v1/components/{resize.pk}/", {"description": "Resize it"}, format="json")
    assert response.status_code == 200 and response.json()["description"] == "Resize it"
    assert staff_api.delete(f"/api/v1/components/{resize.pk}/").status_code == 204
    assert staff_api.get(f"/api/v1/components/{resize.pk}/").status_code == 404


def test_a_new_component_says_its_kind_and_whether_it_is_deterministic(staff_api):
    # given a map component that declares itself deterministic
    response = staff_api.post("/api/v1/components/", {**COMPONENT, "kind": "map", "deterministic": True}, format="json")
    # then both are stored and answered
    assert response.status_code == 201, response.json()
    assert (response.json()["kind"], response.json()["deterministic"]) == ("map", True)
    stored = Component.objects.get(pk=response.json()["id"])
    assert (stored.kind, stored.deterministic) == ("map", True)
    assert staff_api.get(f"/api/v1/components/{stored.pk}/").json()["kind"] == "map"


def test_a_component_without_kind_is_a_merge_and_not_deterministic(staff_api):
    response = staff_api.post("/api/v1/components/", COMPONENT, format="json")
    assert response.status_code == 201
    assert (response.json()["kind"], response.json()["deterministic"]) == ("merge", False)


def test_an_unknown_kind_is_400_naming_it(staff_api):
    response = staff_api.post("/api/v1/components/", {**COMPONENT, "kind": "reduce"}, format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["kind"]
    assert not Component.objects.filter(name="blur").exists()


def test_kind_and_deterministic_cannot_change_once_the_component_exists(staff_api):
    created = staff_api.post("/api/v1/components/", {**COMPONENT, "kind": "map", "deterministic": True},
                             format="json").json()
    url = f"/api/v1/components/{created['id']}/"
    # when a client changes them
    response = staff_api.patch(url, {"kind": "merge", "deterministic": False}, format="json")
    # then it is refused, naming both, and nothing changed
    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == ["deterministic", "kind"]
    assert (Component.objects.get(pk=created["id"]).kind, Component.objects.get(pk=created["id"]).deterministic) == (
        "map", True)
    # and sending back what it read (a PUT of the GET body) is fine, as is leaving them out
    body = {key: value for key, value in staff_api.get(url).json().items()
            if key not in {"id", "created_at", "updated_at"}}
    assert staff_api.put(url, {**body, "description": "blurs"}, format="json").status_code == 200
    del body["kind"], body["deterministic"]
    response = staff_api.put(url, {**body, "description": "blurs more"}, format="json")
    assert response.status_code == 200
    assert (response.json()["kind"], response.json()["deterministic"], response.json()["description"]) == (
        "map", True, "blurs more")


def test_component_used_by_a_pipeline_cannot_be_deleted(staff_api, api, resize):
    assert api.post("/api/v1/pipelines/", {"name": "p", "definition": definition()}, format="json").status_code == 201
    response = staff_api.delete(f"/api/v1/components/{resize.pk}/")
    assert response.status_code == 409 and "used by pipelines" in response.json()["detail"]


# --- pipelines ----------------------------------------------------------------------------------

def create_pipeline(api, **extra):
    body = {"name": "thumbs", "description": "Make thumbnails", "definition": definition(), **extra}
    response = api.post("/api/v1/pipelines/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_pipeline_records_v1_and_owner(api, owner, resize):
    body = create_pipeline(api, created_by="00000000-0000-0000-0000-000000000000")
    assert body["version"] == 1 and body["created_by"] == str(owner.pk)
    history = list(PipelineVersion.objects.filter(pipeline_id=body["id"]).values_list("version", flat=True))
    assert history == [1]


def test_invalid_definition_is_400_naming_node_and_field(api, resize):
    bad = definition()
    bad["nodes"][0]["parameters"] = {"width": 0}
    response = api.post("/api/v1/pipelines/", {"name": "x", "definition": bad}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["definition.nodes[0].parameters.width"]
    assert "shrink" in errors["definition.nodes[0].parameters.width"][0]
    assert not Pipeline.objects.exists()


def test_cycle_and_unknown_component_are_named(api, resize):
    bad = {"nodes": [{"id": "a", "component": {"name": "resize", "version": "1.0.0"}, "parameters": {"width": 1}},
                     {"id": "b", "component": {"name": "nope", "version": "9"}}],
           "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]}
    response = api.post("/api/v1/pipelines/", {"name": "x", "definition": bad}, format="json")
    assert response.status_code == 400
    text = str(response.json()["errors"])
    assert "unknown component nope:9" in text


def test_definition_change_bumps_version_and_keeps_history(api, resize):
    pipeline = create_pipeline(api)
    url = f"/api/v1/pipelines/{pipeline['id']}/"
    response = api.patch(url, {"definition": definition(width=128)}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 2
    # metadata only: same version
    response = api.patch(url, {"name": "renamed"}, format="json")
    assert response.json()["version"] == 2 and response.json()["name"] == "renamed"
    # same definition again: no new version
    assert api.patch(url, {"definition": definition(width=128)}, format="json").json()["version"] == 2
    versions = api.get(url + "versions/").json()["results"]
    assert [v["version"] for v in versions] == [2, 1]
    v1 = api.get(url + "versions/1/").json()
    assert v1["definition"]["nodes"][0]["parameters"] == {"width": 64}
    assert api.get(url + "versions/7/").status_code == 404


def test_invalid_update_changes_nothing(api, resize):
    pipeline = create_pipeline(api)
    url = f"/api/v1/pipelines/{pipeline['id']}/"
    response = api.put(url, {"name": "y", "definition": {"nodes": []}}, format="json")
    assert response.status_code == 400 and "definition.nodes" in response.json()["errors"]
    assert api.get(url).json()["version"] == 1 and api.get(url).json()["name"] == "thumbs"


def test_pipeline_search(api, resize):
    create_pipeline(api)
    create_pipeline(api, name="other", description="sepia toning")
    names = [p["name"] for p in api.get("/api/v1/pipelines/?search=SEPIA").json()["results"]]
    assert names == ["other"]


def test_clone(api, owner, resize):
    pipeline = create_pipeline(api)
    api.patch(f"/api/v1/pipelines/{pipeline['id']}/", {"definition": definition(width=10)}, format="json")
    response = api.post(f"/api/v1/pipelines/{pipeline['id']}/clone/", {}, format="json")
    assert response.status_code == 201
    copy = response.json()
    assert copy["id"] != pipeline["id"] and copy["version"] == 1 and copy["name"] == "thumbs (copy)"
    assert copy["definition"]["nodes"][0]["parameters"] == {"width": 10}


def test_other_users_pipeline_is_404_and_staff_sees_it(api, stranger_api, staff_api, resize):
    pipeline = create_pipeline(api)
    url = f"/api/v1/pipelines/{pipeline['id']}/"
    for call in (stranger_api.get(url), stranger_api.patch(url, {"name": "x"}, format="json"),
                 stranger_api.delete(url), stranger_api.get(url + "versions/"),
                 stranger_api.post(url + "clone/", {}, format="json")):
        assert call.status_code == 404
    assert stranger_api.get("/api/v1/pipelines/").json()["count"] == 0
    assert staff_api.get(url).status_code == 200


def test_delete_pipeline(api, resize):
    pipeline = create_pipeline(api)
    assert api.delete(f"/api/v1/pipelines/{pipeline['id']}/").status_code == 204
    assert not Pipeline.objects.exists() and not PipelineVersion.objects.exists()


def test_pipeline_with_executions_cannot_be_deleted(api, owner, resize):
    pipeline = create_pipeline(api)
    PipelineExecutionFactory(pipeline_id=pipeline["id"], pipeline_version=1, created_by=owner)
    response = api.delete(f"/api/v1/pipelines/{pipeline['id']}/")
    assert response.status_code == 409


def test_pipelines_need_authentication(anon):
    assert anon.get("/api/v1/pipelines/").status_code == 401
    assert anon.post("/api/v1/pipelines/", {}, format="json").status_code == 401
