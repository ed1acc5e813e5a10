"""Pipelines and components saved in the admin go through the API's services: the definition is
validated by registry.dag with each problem on the definition field (named as the API names
it), a changed definition becomes a new version in the history, the signed-in user is the
creator, and a delete the service refuses is a message."""

from __future__ import annotations

import json
import re

import pytest

from executions.models import PipelineExecution
from registry.models import CARRIER_PIPELINE_CATEGORY, Component, Pipeline, PipelineVersion
from tests import factories
from tests.admin.pages import admin_url, errors_of, form_of

pytestmark = pytest.mark.django_db


def ref(name: str) -> dict:
    return {"name": name, "version": "1.0.0"}


RESIZE_THEN_GRAY = {
    "nodes": [{"id": "resize", "component": ref("resize"), "parameters": {"width": 320}},
              {"id": "gray", "component": ref("grayscale"), "parameters": {}}],
    "edges": [{"from": "resize", "to": "gray"}],
}

# (what is wrong, definition, the message on the definition field: the API's key and text)
BAD_DEFINITIONS = [
    ("cycle", {"nodes": [{"id": "a", "component": ref("grayscale")}, {"id": "b", "component": ref("grayscale")}],
               "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]},
     "definition.edges: node 'a': cycle: a -> b -> a."),
    ("unknown component", {"nodes": [{"id": "sharp", "component": ref("sharpenn")}], "edges": []},
     "definition.nodes[0].component: node 'sharp': unknown component sharpenn:1.0.0."),
    ("parameter of the wrong type", {"nodes": [{"id": "resize", "component": ref("resize"),
                                                "parameters": {"width": "800px"}}], "edges": []},
     "definition.nodes[0].parameters.width: node 'resize': '800px' is not of type 'integer'"),
    ("edge to a missing node", {"nodes": [{"id": "resize", "component": ref("resize"), "parameters": {"width": 8}}],
                                "edges": [{"from": "resize", "to": "gray"}]},
     "definition.edges[0]: node 'resize': dangling edge resize -> gray: no node 'gray'."),
]


def _api_errors(staff_user, definition) -> dict:
    """What the API answers for the same definition (the admin must name problems the same way)."""
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(staff_user)
    response = api.post("/api/v1/pipelines/", {"name": "via api", "definition": definition}, format="json")
    assert response.status_code == 400
    return response.json()["errors"]


@pytest.mark.parametrize("case, definition, message", BAD_DEFINITIONS, ids=[c[0] for c in BAD_DEFINITIONS])
def test_adding_a_bad_definition_is_refused_on_the_field_as_the_api_names_it(
        staff_client, staff_user, builtins, case, definition, message):
    # given the add page filled in with a bad definition
    data = {**form_of(staff_client, admin_url(Pipeline, "add")), "name": "bad", "definition": json.dumps(definition)}
    # when it is saved
    response = staff_client.post(admin_url(Pipeline, "add"), data)
    # then the page comes back with the problem on the definition field, as the API names it
    assert response.status_code == 200
    field_errors = response.context["adminform"].form.errors["definition"]
    assert message in field_errors, field_errors
    key, text = message.split(": ", 1)
    assert _api_errors(staff_user, definition)[key] == [text]
    assert message in errors_of(response)
    # and nothing is stored
    assert not Pipeline.objects.exists() and not PipelineVersion.objects.exists()


@pytest.mark.parametrize("case, definition, message", BAD_DEFINITIONS, ids=[c[0] for c in BAD_DEFINITIONS])
def test_changing_to_a_bad_definition_is_refused_and_the_pipeline_stays(staff_client, staff_user, builtins,
                                                                        case, definition, message):
    from registry.services import pipeline_create

    pipeline = pipeline_create(name="good", definition=RESIZE_THEN_GRAY, created_by=staff_user)
    url = admin_url(Pipeline, "change", pipeline.pk)
    response = staff_client.post(url, {**form_of(staff_client, url), "definition": json.dumps(definition)})
    assert response.status_code == 200
    assert message in response.context["adminform"].form.errors["definition"]
    pipeline.refresh_from_db()
    assert (pipeline.version, pipeline.definition) == (1, RESIZE_THEN_GRAY)
    assert list(pipeline.versions.values_list("version", flat=True)) == [1]


def test_added_pipeline_is_version_1_created_by_the_signed_in_user(staff_client, staff_user, builtins):
    # given the add page: no creator box and no version box to fill in
    data = form_of(staff_client, admin_url(Pipeline, "add"))
    assert "created_by" not in data and "version" not in data
    # when a valid pipeline is saved, with a forged creator and version posted anyway
    other = factories.UserFactory()
    response = staff_client.post(admin_url(Pipeline, "add"), {
        **data, "name": "thumbs", "definition": json.dumps(RESIZE_THEN_GRAY), "created_by": str(other.pk),
        "version": "7", "category": "demo"})
    # then it is stored by the service: version 1 in the history, owned by the signed-in user
    assert response.status_code == 302, errors_of(response)
    pipeline = Pipeline.objects.get()
    assert (pipeline.name, pipeline.version, pipeline.created_by, pipeline.category) == (
        "thumbs", 1, staff_user, "demo")
    assert list(pipeline.versions.values_list("version", "created_by", "definition")) == [
        (1, staff_user.pk, RESIZE_THEN_GRAY)]


def test_a_changed_definition_bumps_the_version_and_is_stored_in_the_history(staff_client, staff_user, builtins):
    from registry.services import pipeline_create

    owner = factories.UserFactory()
    pipeline = pipeline_create(name="thumbs", definition=RESIZE_THEN_GRAY, created_by=owner)
    url = admin_url(Pipeline, "change", pipeline.pk)
    # given the change page: version and creator are shown, not editable
    page = staff_client.get(url).content.decode()
    data = form_of(staff_client, url)
    assert "version" not in data and "created_by" not in data
    assert owner.username in page
    # when the width is changed (and a version is forged)
    changed = json.loads(json.dumps(RESIZE_THEN_GRAY))
    changed["nodes"][0]["parameters"]["width"] = 640
    response = staff_client.post(url, {**data, "definition": json.dumps(changed), "version": "1"})
    # then the pipeline is at version 2, both versions are in the history, and the creator stays
    assert response.status_code == 302, errors_of(response)
    pipeline.refresh_from_db()
    assert (pipeline.version, pipeline.definition, pipeline.created_by) == (2, changed, owner)
    history = list(PipelineVersion.objects.filter(pipeline=pipeline).order_by("version")
                   .values_list("version", "definition", "created_by"))
    assert history == [(1, RESIZE_THEN_GRAY, owner.pk), (2, changed, staff_user.pk)]
    # and the history on the page lists both versions
    html = staff_client.get(url).content.decode()
    assert re.findall(r"<td class=\"field-version\">\s*<p>(\d+)</p>", html) == ["2", "1"]


def test_a_rename_alone_keeps_the_version(staff_client, staff_user, builtins):
    from registry.services import pipeline_create

    pipeline = pipeline_create(name="thumbs", definition=RESIZE_THEN_GRAY, created_by=staff_user)
    url = admin_url(Pipeline, "change", pipeline.pk)
    response = staff_client.post(url, {**form_of(staff_client, url), "name": "thumbnails"})
    assert response.status_code == 302, errors_of(response)
    pipeline.refresh_from_db()
    assert (pipeline.name, pipeline.version, pipeline.versions.count()) == ("thumbnails", 1, 1)


def test_the_carrier_category_is_refused_on_its_field(staff_client, staff_user, builtins):
    response = staff_client.post(admin_url(Pipeline, "add"), {
        **form_of(staff_client, admin_url(Pipeline, "add")), "name": "sneaky",
        "definition": json.dumps(RESIZE_THEN_GRAY), "category": CARRIER_PIPELINE_CATEGORY})
    assert response.status_code == 200
    assert "is reserved" in " ".join(response.context["adminform"].form.errors["category"])
    assert not Pipeline.objects.exists()


def test_a_carrier_pipeline_can_be_renamed_keeping_its_category(staff_client, staff_user, builtins):
    from registry.services import pipeline_create

    carrier = pipeline_create(name="workflow: x v1", definition=RESIZE_THEN_GRAY, created_by=staff_user)
    Pipeline.objects.filter(pk=carrier.pk).update(category=CARRIER_PIPELINE_CATEGORY)
    url = admin_url(Pipeline, "change", carrier.pk)
    response = staff_client.post(url, {**form_of(staff_client, url), "description": "explained"})
    assert response.status_code == 302, errors_of(response)
    carrier.refresh_from_db()
    assert (carrier.description, carrier.category) == ("explained", CARRIER_PIPELINE_CATEGORY)


def test_deleting_a_pipeline_with_runs_is_refused(staff_client, staff_user, builtins):
    from registry.services import pipeline_create

    pipeline = pipeline_create(name="thumbs", definition=RESIZE_THEN_GRAY, created_by=staff_user)
    factories.PipelineExecutionFactory(pipeline=pipeline)
    response = staff_client.post(admin_url(Pipeline, "delete", pipeline.pk), {"post": "yes"}, follow=True)
    assert response.status_code in (200, 403)
    assert Pipeline.objects.filter(pk=pipeline.pk).exists() and PipelineExecution.objects.count() == 1


def test_a_component_with_an_invalid_input_schema_is_refused_on_the_field(staff_client):
    data = {**form_of(staff_client, admin_url(Component, "add")), "name": "sharpen", "version": "1.0.0",
            "docker_image": "example/sharpen:1", "runner": "container", "input_schema": '{"type": "nope"}'}
    response = staff_client.post(admin_url(Component, "add"), data)
    assert response.status_code == 200
    assert "invalid JSON Schema" in " ".join(response.context["adminform"].form.errors["input_schema"])
    assert not Component.objects.filter(name="sharpen").exists()
    # and a valid one is stored by the service
    response = staff_client.post(admin_url(Component, "add"), {**data, "input_schema": '{"type": "object"}'})
    assert response.status_code == 302, errors_of(response)
    assert Component.objects.get(name="sharpen").input_schema == {"type": "object"}


def test_deleting_a_component_a_pipeline_names_is_refused_with_a_message(staff_client, staff_user, builtins):
    from registry.services import pipeline_create

    pipeline_create(name="thumbs", definition=RESIZE_THEN_GRAY, created_by=staff_user)
    resize = Component.objects.get(name="resize")
    # on its delete page
    response = staff_client.post(admin_url(Component, "delete", resize.pk), {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert "Not deleted: component resize:1.0.0 is used by pipelines: thumbs." in response.content.decode()
    # and by the bulk action
    gray = Component.objects.get(name="grayscale")
    blur = Component.objects.get(name="blur")
    response = staff_client.post(admin_url(Component, "changelist"), {
        "action": "delete_selected", "_selected_action": [str(resize.pk), str(blur.pk)], "post": "yes"}, follow=True)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Resize:1.0.0: not deleted: component resize:1.0.0 is used by pipelines: thumbs." in html  # capfirst
    assert "Deleted 1 component." in html
    assert set(Component.objects.filter(pk__in=[resize.pk, gray.pk, blur.pk]).values_list("name", flat=True)) == {
        "resize", "grayscale"}


def test_a_component_made_in_the_admin_says_its_kind_and_determinism_which_then_stay(staff_client):
    # given a map component added as deterministic
    data = {**form_of(staff_client, admin_url(Component, "add")), "name": "sharpen", "version": "1.0.0",
            "docker_image": "example/sharpen:1", "runner": "container", "input_schema": '{"type": "object"}',
            "kind": "map", "deterministic": "on"}
    response = staff_client.post(admin_url(Component, "add"), data)
    assert response.status_code == 302, errors_of(response)
    component = Component.objects.get(name="sharpen")
    assert (component.kind, component.deterministic) == ("map", True)
    # then the list shows both
    html = staff_client.get(admin_url(Component, "changelist")).content.decode()
    row = re.search(r'<tr[^>]*>(?:(?!</tr>).)*sharpen(?:(?!</tr>).)*</tr>', html, re.S).group(0)
    assert '<td class="field-kind">Map (one output per input)</td>' in row
    assert 'class="field-deterministic"><img src="/static/admin/img/icon-yes.svg" alt="True">' in row
    # and its page shows them read-only: a post cannot change them
    change = admin_url(Component, "change", component.pk)
    page = staff_client.get(change).content.decode()
    assert 'name="kind"' not in page and "Map (one output per input)" in page
    form = form_of(staff_client, change)
    response = staff_client.post(change, {**form, "kind": "merge", "description": "sharper"})
    assert response.status_code == 302, errors_of(response)
    component.refresh_from_db()
    assert (component.kind, component.deterministic, component.description) == ("map", True, "sharper")
