"""The pipeline page's structured editor: the definition textarea stays the field submitted, the
page carries the components and their parameter schemas for the editor, and the preview
endpoint validates a posted definition with registry.dag (staff only) and answers the picture
and the errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from registry.dag_picture import node_dom_id
from registry.models import Pipeline
from tests import factories
from tests.admin.pages import admin_url
from tests.executions.conftest import node

pytestmark = pytest.mark.django_db

PREVIEW = "admin:registry_pipeline_definition_preview"


def _preview(client, definition):
    return client.post(reverse(PREVIEW), data=json.dumps({"definition": definition}), content_type="application/json")


def _node_classes(svg: str) -> dict[str, str]:
    root = ET.fromstring(svg)
    return {g.get("id"): g.get("class") for g in root.iter("{http://www.w3.org/2000/svg}g")
            if "dag-node" in (g.get("class") or "")}


def test_the_add_page_carries_the_editor_the_components_and_the_definition_field(staff_client, builtins):
    html = staff_client.get(admin_url(Pipeline, "add")).content.decode()
    assert 'name="definition"' in html and "registry/pipeline_editor.js" in html
    assert reverse(PREVIEW) in html
    assert "must be a JSON object" not in html  # an empty new definition is not drawn as an error
    start = html.index('id="pipeline-editor-components"')
    data = json.loads(html[html.index(">", start) + 1: html.index("</script>", start)])
    resize = next(c for c in data if c["name"] == "resize")
    assert resize["input_schema"]["properties"]["width"]["type"] == "integer"


def test_a_valid_definition_previews_as_a_picture_without_errors(staff_client, builtins):
    response = _preview(staff_client, {"nodes": [node("resize", "resize", width=64), node("gray", "grayscale")],
                                       "edges": [{"from": "resize", "to": "gray"}]})
    assert response.status_code == 200
    body = response.json()
    assert body["valid"] is True and body["errors"] == [] and body["lines"] == []
    assert set(_node_classes(body["svg"])) == {node_dom_id("resize"), node_dom_id("gray")}


def test_an_invalid_definition_previews_with_its_nodes_marked_and_errors_named(staff_client, builtins):
    before = Pipeline.objects.count()
    response = _preview(staff_client, {"nodes": [node("resize", "resize", width="800px"), node("a", "grayscale"),
                                                 node("b", "grayscale")],
                                       "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}]})
    body = response.json()
    assert response.status_code == 200 and body["valid"] is False
    assert "definition.nodes[0].parameters.width: node 'resize': '800px' is not of type 'integer'" in body["lines"]
    assert any("cycle" in line for line in body["lines"])
    classes = _node_classes(body["svg"])
    assert "dag-invalid" in classes[node_dom_id("resize")]
    assert Pipeline.objects.count() == before  # nothing stored


def test_the_preview_is_for_staff_who_may_edit_pipelines_and_only_by_post(staff_client, builtins):
    from django.test import Client

    client = Client()
    definition = {"nodes": [node("gray", "grayscale")], "edges": []}
    assert staff_client.get(reverse(PREVIEW)).status_code == 405
    assert staff_client.post(reverse(PREVIEW), data="not json", content_type="application/json").status_code == 400
    assert _preview(client, definition).status_code == 302  # anonymous: to the login page
    outsider = factories.UserFactory(is_staff=False)
    client.force_login(outsider)
    assert _preview(client, definition).status_code == 302
    viewer = factories.UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_pipeline"))
    client.force_login(viewer)
    assert _preview(client, definition).status_code == 403
