"""Component versions are immutable once a run used them (#15): a change is refused by the one
write path (registry.services, behind the API and the admin) naming the version and saying to make
a new one; pipelines keep naming the version they were built with, and the API and the admin show
which of them name an outdated one."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from registry import services
from registry.models import Component, Pipeline
from registry.selectors import component_latest_versions, pipeline_outdated_components, version_key
from tests.admin.pages import admin_url, errors_of, form_of
from tests.api.conftest import client_for
from tests.factories import ComponentExecutionFactory, ComponentFactory, PipelineFactory, StaffFactory

pytestmark = pytest.mark.django_db

USED_MESSAGE = ("component detect:1.0.0 has been used by runs and cannot be changed: create a new version "
                "(for example detect:1.0.1) instead.")


@pytest.fixture
def detect():
    return ComponentFactory(name="detect", version="1.0.0", docker_image="example/detect:1",
                            resource_requirements={"gpu": 1})


def _used(component: Component) -> Component:
    ComponentExecutionFactory(component=component)
    return component


def _node(node_id: str, name: str, version: str) -> dict:
    return {"id": node_id, "component": {"name": name, "version": version}, "parameters": {}}


# --- the service -------------------------------------------------------------------------------------

def test_a_used_version_refuses_a_change_of_what_it_runs_naming_it_and_the_way_out(detect):
    _used(detect)
    with pytest.raises(ValidationError) as refused:
        services.component_update(component=detect, data={"docker_image": "example/detect:2",
                                                          "resource_requirements": {"gpu": 0}})
    assert refused.value.message_dict == {"docker_image": [USED_MESSAGE], "resource_requirements": [USED_MESSAGE]}
    detect.refresh_from_db()
    assert (detect.docker_image, detect.resource_requirements) == ("example/detect:1", {"gpu": 1})


def test_a_used_version_still_takes_a_new_description_and_its_own_values_back(detect):
    _used(detect)
    services.component_update(component=detect, data={"description": "finds things",
                                                      "docker_image": "example/detect:1"})
    detect.refresh_from_db()
    assert detect.description == "finds things" and detect.docker_image == "example/detect:1"


def test_a_version_no_run_used_may_still_change(detect):
    ComponentExecutionFactory(component=ComponentFactory(name="other"))  # another component's run
    services.component_update(component=detect, data={"docker_image": "example/detect:2"})
    detect.refresh_from_db()
    assert detect.docker_image == "example/detect:2"


def test_a_used_version_may_not_be_renamed_either(detect):
    _used(detect)
    with pytest.raises(ValidationError) as refused:
        services.component_update(component=detect, data={"version": "1.0.0-fixed"})
    assert refused.value.message_dict == {"version": [USED_MESSAGE]}


# --- versions and outdated pipelines -----------------------------------------------------------------

def test_versions_are_ordered_as_numbers_with_a_pre_release_before_its_release():
    ordered = ["1.0.0", "1.2.0", "1.10.0-rc1", "1.10.0", "2"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_a_pipeline_naming_an_older_version_is_outdated_node_by_node(detect):
    ComponentFactory(name="detect", version="1.10.0")
    ComponentFactory(name="detect", version="1.9.0")
    ComponentFactory(name="blur", version="1.0.0")
    pipeline = PipelineFactory(definition={"nodes": [_node("find", "detect", "1.0.0"), _node("soft", "blur", "1.0.0"),
                                                     _node("again", "detect", "1.10.0")], "edges": []})
    assert component_latest_versions() == {"detect": "1.10.0", "blur": "1.0.0"}
    assert pipeline_outdated_components(pipeline) == [
        {"node": "find", "name": "detect", "version": "1.0.0", "latest": "1.10.0"}]


# --- the API -----------------------------------------------------------------------------------------

def test_the_api_refuses_a_change_of_a_used_version_with_a_400_naming_it(detect):
    _used(detect)
    api = client_for(StaffFactory())
    response = api.patch(f"/api/v1/components/{detect.pk}/", {"docker_image": "example/detect:2"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"docker_image": [USED_MESSAGE]}
    # and a new version of it is made as any component
    response = api.post("/api/v1/components/", {"name": "detect", "version": "1.0.1", "docker_image": "example/detect:2"},
                        format="json")
    assert response.status_code == 201, response.json()


def test_the_api_shows_and_filters_pipelines_naming_an_outdated_version(detect, user):
    api = client_for(user)
    old = PipelineFactory(created_by=user, definition={"nodes": [_node("find", "detect", "1.0.0")], "edges": []})
    current = PipelineFactory(created_by=user, definition={"nodes": [_node("find", "detect", "1.1.0")], "edges": []})
    assert api.get(f"/api/v1/pipelines/{old.pk}/").json()["outdated_components"] == []
    ComponentFactory(name="detect", version="1.1.0")
    # the detail and the list say which node is behind, and to which version
    behind = [{"node": "find", "name": "detect", "version": "1.0.0", "latest": "1.1.0"}]
    assert api.get(f"/api/v1/pipelines/{old.pk}/").json()["outdated_components"] == behind
    listed = {row["id"]: row["outdated_components"] for row in api.get("/api/v1/pipelines/").json()["results"]}
    assert listed == {str(old.pk): behind, str(current.pk): []}
    # and ?outdated=true keeps only the pipelines that are behind
    assert [row["id"] for row in api.get("/api/v1/pipelines/?outdated=true").json()["results"]] == [str(old.pk)]
    assert api.get("/api/v1/pipelines/?outdated=maybe").status_code == 400
    # the pipeline itself still names the version it was built with
    old.refresh_from_db()
    assert old.definition["nodes"][0]["component"]["version"] == "1.0.0"


# --- the admin ---------------------------------------------------------------------------------------

def test_the_admin_refuses_a_change_of_a_used_version_on_the_field(staff_client, detect):
    _used(detect)
    change = admin_url(Component, "change", detect.pk)
    response = staff_client.post(change, {**form_of(staff_client, change), "docker_image": "example/detect:2"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["docker_image"] == [USED_MESSAGE]
    detect.refresh_from_db()
    assert detect.docker_image == "example/detect:1"
    # a description alone is saved
    response = staff_client.post(change, {**form_of(staff_client, change), "description": "finds things"})
    assert response.status_code == 302, errors_of(response)


def test_the_admin_shows_pipelines_naming_an_outdated_version(staff_client, staff_user, detect):
    ComponentFactory(name="detect", version="2.0.0")
    old = PipelineFactory(name="finder", created_by=staff_user,
                          definition={"nodes": [_node("find", "detect", "1.0.0")], "edges": []})
    PipelineFactory(name="current", created_by=staff_user,
                    definition={"nodes": [_node("find", "detect", "2.0.0")], "edges": []})
    html = staff_client.get(admin_url(Pipeline, "changelist")).content.decode()
    assert '<td class="field-outdated">detect 1.0.0 → 2.0.0</td>' in html
    filtered = staff_client.get(admin_url(Pipeline, "changelist") + "?outdated=yes").content.decode()
    assert "finder" in filtered and ">current<" not in filtered
    page = staff_client.get(admin_url(Pipeline, "change", old.pk)).content.decode()
    assert "node find: detect 1.0.0 (newest 2.0.0)" in page
