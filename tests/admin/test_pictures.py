"""DAG pictures: dot source escapes every label, the SVG holds every node (by its stable id) with
hostile names as text, a definition that does not validate is drawn with its offending nodes
marked and its errors listed, and each admin page (pipeline, pipeline version, workflow,
workflow version, execution) shows its picture, from the cache when it is there."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from django.core.cache import cache
from django.test import override_settings

from executions.models import PipelineExecution
from registry import dag_picture
from registry.dag_picture import node_dom_id
from registry.models import Pipeline, PipelineVersion, Workflow, WorkflowVersion
from registry.services import pipeline_create
from registry.workflow_services import workflow_create
from tests import factories
from tests.admin.pages import admin_url
from tests.executions.conftest import node
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)">'


def _svg_tree(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def _nodes(root: ET.Element) -> dict[str, str]:
    """{svg id: class} of the picture's nodes."""
    return {g.get("id"): g.get("class") for g in root.iter(f"{SVG}g") if "dag-node" in (g.get("class") or "")}


def test_dot_strings_escape_quotes_backslashes_entities_and_control_characters():
    assert dag_picture.dot_string('a"b') == '"a\\"b"'
    assert dag_picture.dot_string("x\\N\\l") == '"x\\\\N\\\\l"'  # dot escapes stay literal
    assert dag_picture.dot_string("&amp;") == '"&amp;amp;"'
    assert dag_picture.dot_string("one\ntwo\x00") == '"one two "'


def test_the_svg_holds_every_node_and_hostile_labels_are_text():
    definition = {"nodes": [{"id": HOSTILE, "component": {"name": 'x" onerror="1', "version": "1.0.0"}},
                            {"id": "gray", "component": {"name": "grayscale", "version": "1.0.0"}}],
                  "edges": [{"from": HOSTILE, "to": "gray"}]}
    source = dag_picture.pipeline_dot(definition)
    assert "rankdir=LR" in source
    svg = dag_picture.render_svg(source)
    root = _svg_tree(svg)
    # every node, by its stable id
    assert set(_nodes(root)) == {node_dom_id(HOSTILE), node_dom_id("gray")}
    # the payloads are text of <text> elements: no script element, no event attribute anywhere
    assert HOSTILE in _texts(root) and 'x" onerror="1 1.0.0' in _texts(root)
    assert "grayscale 1.0.0" in _texts(root)
    assert not [e for e in root.iter() if e.tag.endswith("script") or e.tag.endswith("img")]
    assert not [a for e in root.iter() for a in e.attrib if a.lower().startswith("on")]
    assert "<script" not in svg and "&lt;script&gt;" in svg


def test_an_invalid_definition_marks_its_offending_nodes_and_lists_the_errors(builtins):
    definition = {"nodes": [node("resize", "resize", width="800px"), node("sharp", "sharpenn"),
                            node("gray", "grayscale")],
                  "edges": [{"from": "resize", "to": "gray"}, {"from": "sharp", "to": "ghost"}]}
    errors = dag_picture.definition_errors(definition)
    assert {e["node"] for e in errors} >= {"resize", "sharp"}
    root = _svg_tree(dag_picture.render_svg(dag_picture.pipeline_dot(definition, errors=errors)))
    classes = _nodes(root)
    assert "dag-invalid" in classes[node_dom_id("resize")] and "dag-invalid" in classes[node_dom_id("sharp")]
    assert "dag-invalid" not in classes[node_dom_id("gray")]
    assert "dag-missing" in classes[node_dom_id("ghost")]  # the dangling edge's end
    html = str(dag_picture.as_html(dag_picture.definition_preview(definition)))
    assert 'class="dag-errors errorlist"' in html and "sharpenn" in html and "800px" in html


def test_a_workflow_picture_labels_nodes_with_name_and_type_and_marks_a_cycle(staff_user):
    looped, _ = workflow_create(user=staff_user, data=sample_document(params=[], edges=[
        {"parent": "fetch", "child": "summarize", "handoff_data": None},
        {"parent": "summarize", "child": "fetch", "handoff_data": None}]))
    pic = dag_picture.workflow_picture(kind="workflow", object_id=looped.pk, version=looped.version,
                                       document=sample_document(params=[], edges=[
                                           {"parent": "fetch", "child": "summarize"},
                                           {"parent": "summarize", "child": "fetch"}]))
    root = _svg_tree(pic.svg)
    assert {"Fetch page", "tool", "Summarize text", "agent", "Post to chat"} <= set(_texts(root))
    classes = _nodes(root)
    assert "dag-invalid" in classes[node_dom_id("fetch")] and "dag-invalid" not in classes[node_dom_id("post")]
    assert "'Fetch page' -> 'Summarize text' -> 'Fetch page'" in pic.errors[0]["message"]


def _pipeline(staff_user, builtins, name="Pictured"):
    return pipeline_create(name=name, description="", created_by=staff_user, definition={
        "nodes": [node("resize", "resize", width=64), node(HOSTILE, "grayscale")],
        "edges": [{"from": "resize", "to": HOSTILE}]})


def test_pipeline_and_version_pages_show_the_picture(staff_client, staff_user, builtins):
    pipeline = _pipeline(staff_user, builtins)
    for url in (admin_url(Pipeline, "change", pipeline.pk),
                admin_url(PipelineVersion, "change", PipelineVersion.objects.get(pipeline=pipeline).pk)):
        html = staff_client.get(url).content.decode()
        assert f'id="{node_dom_id("resize")}"'.replace("-", "&#45;", 1) in html, url
        assert f'id="{node_dom_id(HOSTILE)}"'.replace("-", "&#45;", 1) in html, url
        assert "<script>alert(1)" not in html and 'onerror="alert(2)"' not in html


def test_a_page_draws_from_the_cache_and_stores_what_it_drew(staff_client, staff_user, builtins):
    pipeline = _pipeline(staff_user, builtins)
    key = dag_picture.cache_key("pipeline", pipeline.pk, pipeline.version)
    cache.delete(key)
    staff_client.get(admin_url(PipelineVersion, "change", PipelineVersion.objects.get(pipeline=pipeline).pk))
    stored = cache.get(key)
    assert stored["svg"].startswith("<svg") and stored["errors"] == []
    # a page view reads the cached picture rather than running dot
    cache.set(key, {"svg": '<svg id="drawn-before"></svg>', "errors": []})
    html = staff_client.get(admin_url(Pipeline, "change", pipeline.pk)).content.decode()
    assert 'id="drawn-before"' in html
    cache.delete(key)


def test_a_cache_outage_does_not_break_the_page(staff_client, staff_user, builtins):
    pipeline = _pipeline(staff_user, builtins)
    unreachable = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://127.0.0.1:9/0",
                               "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient",
                                           "SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}}}
    version = PipelineVersion.objects.get(pipeline=pipeline)
    with override_settings(CACHES=unreachable):
        response = staff_client.get(admin_url(PipelineVersion, "change", version.pk))
    assert response.status_code == 200
    assert f'id="{node_dom_id("resize")}"'.replace("-", "&#45;", 1) in response.content.decode()


def test_workflow_and_workflow_version_pages_show_the_picture(staff_client, staff_user):
    workflow, _ = workflow_create(user=staff_user, data=sample_document())
    for url in (admin_url(Workflow, "change", workflow.pk),
                admin_url(WorkflowVersion, "change", WorkflowVersion.objects.get(workflow=workflow).pk)):
        html = staff_client.get(url).content.decode()
        for key in ("fetch", "summarize", "post"):
            assert f'id="{node_dom_id(key)}"'.replace("-", "&#45;", 1) in html, (url, key)
        assert "Summarize text" in html


def test_the_execution_picture_colors_nodes_by_step_status(staff_client, staff_user, builtins):
    pipeline = _pipeline(staff_user, builtins)
    execution = factories.PipelineExecutionFactory(pipeline=pipeline, status="running")
    factories.ComponentExecutionFactory(execution=execution, node_id="resize", status="completed")
    factories.ComponentExecutionFactory(execution=execution, node_id=HOSTILE, status="running")
    html = staff_client.get(admin_url(PipelineExecution, "change", execution.pk)).content.decode()
    assert 'id="dag-live"' in html and "executions/dag_live.js" in html
    resize = node_dom_id("resize").replace("-", "&#45;", 1)
    hostile = node_dom_id(HOSTILE).replace("-", "&#45;", 1)
    assert f'<g id="{resize}" class="node dag&#45;node dag&#45;status&#45;completed' in html
    assert f'<g id="{hostile}" class="node dag&#45;node dag&#45;status&#45;running' in html
    assert "<script>alert(1)" not in html
