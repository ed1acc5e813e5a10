"""The workflow page renders its node, edge and param rows in Python (registry/templatetags/
inline_rows.py, imageflow/admin_widgets.py) with the markup of Django's tabular inline and
widget templates, so it looks and posts as before; its queries do not grow with the rows, and
its version list shows the newest versions only, with a link to all of them."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.forms.renderers import DjangoTemplates
from django.test.utils import CaptureQueriesContext

from registry import admin as registry_admin
from registry.models import Workflow, WorkflowVersion
from registry.workflow_services import workflow_create, workflow_replace
from registry.workflow_selectors import workflow_document
from tests.admin.pages import admin_url, errors_of, form_of
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _normalized(html: str) -> str:
    # The template's whitespace between tags is all that may differ; the CSRF token differs per page.
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)
    return re.sub(r"\s*(<[^>]*>)\s*", r"\1", re.sub(r"\s+", " ", html))


def _by_django_templates(monkeypatch) -> None:
    # The page as Django's own templates draw it: the reference the Python rows must match.
    monkeypatch.setattr(registry_admin.PythonRowsInline, "template", "admin/edit_inline/tabular.html")
    monkeypatch.setattr(registry_admin, "PYTHON_WIDGETS", DjangoTemplates())
    monkeypatch.setattr(registry_admin.WorkflowAdminForm, "default_renderer", None)


def _nodes(n: int) -> dict:
    return sample_document(
        name=f"{n} nodes",
        nodes=[{"key": f"n{i}", "node_type": "tool", "name": f"Node {i}", "parameters": {"i": i}, "order_index": i}
               for i in range(n)],
        edges=[{"parent": f"n{i}", "child": f"n{i + 1}", "handoff_data": None} for i in range(n - 1)])


@pytest.fixture
def hostile_workflow(staff_user):
    document = sample_document(name=HOSTILE)
    document["nodes"][0]["name"] = HOSTILE
    document["nodes"][1]["parameters"] = {"prompt": HOSTILE}
    document["params"][1]["metadata"] = {"help": HOSTILE}
    created, _ = workflow_create(user=staff_user, data=document)
    return created


def test_the_page_is_the_markup_of_djangos_templates(staff_client, hostile_workflow, monkeypatch):
    # given a workflow whose names and values carry markup
    url = admin_url(Workflow, "change", hostile_workflow.pk)
    # when its page is rendered by the Python rows and widgets, and by Django's templates
    by_python = staff_client.get(url).content.decode()
    _by_django_templates(monkeypatch)
    by_templates = staff_client.get(url).content.decode()
    # then the two are the same page, and the markup is shown as text
    assert _normalized(by_python) == _normalized(by_templates)
    assert 'id="nodes-empty"' in by_python and 'id="edges-0"' in by_python and "<script>alert" not in by_python
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in by_python


def test_a_refused_save_shows_its_errors_as_djangos_templates_do(staff_client, hostile_workflow, monkeypatch):
    # given a page posted with a param default that does not parse and node parameters that are not JSON
    url = admin_url(Workflow, "change", hostile_workflow.pk)
    data = form_of(staff_client, url)
    param = next(k for k, v in data.items() if re.fullmatch(r"params-\d+-key", k) and v == "sentences")
    data[param.replace("-key", "-default_value")] = "big"
    data["nodes-0-parameters"] = "{not json"
    # when the refused page comes back, by the Python rows and by Django's templates
    by_python = staff_client.post(url, data)
    _by_django_templates(monkeypatch)
    by_templates = staff_client.post(url, data)
    # then it is refused with the errors on their fields, in the same markup
    assert by_python.status_code == by_templates.status_code == 200
    assert "does not parse as int" in errors_of(by_python) and "Enter a valid JSON" in errors_of(by_python)
    assert _normalized(by_python.content.decode()) == _normalized(by_templates.content.decode())


def test_the_page_posts_back_as_a_browser_would_and_saves_a_new_version(staff_client, hostile_workflow):
    # given the page's form as a browser posts it, with a node renamed
    url = admin_url(Workflow, "change", hostile_workflow.pk)
    data = form_of(staff_client, url)
    index = next(k for k, v in data.items() if re.fullmatch(r"nodes-\d+-name", k) and v == "Post to chat")
    data[index] = "Post to the channel"
    # when it is saved
    response = staff_client.post(url, data)
    # then the service stored it as version 2, the rest unchanged
    assert response.status_code == 302, errors_of(response)
    hostile_workflow.refresh_from_db()
    document = workflow_document(hostile_workflow)
    assert hostile_workflow.version == 2
    assert sorted(n["name"] for n in document["nodes"]) == sorted([HOSTILE, "Summarize text", "Post to the channel"])
    assert {n["key"]: n["parameters"] for n in document["nodes"]}["summarize"] == {"prompt": HOSTILE}


def test_the_queries_do_not_grow_with_the_rows(staff_client, staff_user):
    # given a workflow of 3 nodes and one of 15 nodes (and 14 edges)
    small, _ = workflow_create(user=staff_user, data=_nodes(3))
    big, _ = workflow_create(user=staff_user, data=_nodes(15))
    counts = []
    for workflow in (small, big):
        url = admin_url(Workflow, "change", workflow.pk)
        staff_client.get(url)  # its picture drawn and kept once
        # when each page is viewed
        with CaptureQueriesContext(connection) as queries:
            html = staff_client.get(url).content.decode()
        counts.append(len(queries))
        assert html.count('name="nodes-') > 0
    # then both ran the same queries
    assert counts[0] == counts[1]


def test_the_newest_versions_are_listed_with_a_link_to_all(staff_client, staff_user):
    # given a workflow saved 14 times (versions 1 to 14)
    workflow, _ = workflow_create(user=staff_user, data=sample_document())
    for n in range(2, 15):
        workflow = workflow_replace(workflow=workflow, user=staff_user, data=sample_document(description=f"take {n}"),
                                    based_on_version=workflow.version)
    assert workflow.version == 14
    url = admin_url(Workflow, "change", workflow.pk)
    # when its page is viewed
    response = staff_client.get(url)
    html = response.content.decode()
    # then it lists the newest 10 versions, and links to the list of all 14
    listed = [form.instance.version for form in response.context["inline_admin_formsets"][-1].formset.forms]
    assert listed == list(range(14, 4, -1))
    link = re.search(r'href="([^"]*workflowversion/\?workflow__id__exact=[^"]*)"', html).group(1)
    versions = staff_client.get(link.replace("&amp;", "&"))
    assert versions.status_code == 200
    assert versions.context["cl"].result_count == WorkflowVersion.objects.filter(workflow=workflow).count() == 14
    # and the page still saves (its version rows post back as shown)
    data = {**form_of(staff_client, url), "description": "take 15"}
    assert staff_client.post(url, data).status_code == 302
    workflow.refresh_from_db()
    assert workflow.version == 15
