"""A workflow version's page shows the diff against the version before it (as the API's diff),
and its Restore button makes that version current again through workflow_restore (a new
version), refusing when the workflow moved on since the page was loaded."""

from __future__ import annotations

import pytest
from django.urls import reverse

from registry.models import Workflow, WorkflowVersion
from registry.versioning import diff_workflow_documents
from registry.workflow_services import workflow_create, workflow_replace
from registry.workflow_selectors import workflow_document
from tests.admin.pages import admin_url
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_versions(staff_user):
    workflow, _ = workflow_create(user=staff_user, data=sample_document())
    changed = sample_document()
    changed["nodes"] = [n for n in changed["nodes"] if n["key"] != "post"] + [
        {"key": "archive", "node_type": "tool", "name": "Archive summary", "parameters": None, "order_index": 3}]
    changed["nodes"][1]["parameters"] = {"prompt": "Two sentences", "model": "large"}
    changed["edges"] = [changed["edges"][0], {"parent": "summarize", "child": "archive", "handoff_data": None}]
    workflow = workflow_replace(workflow=workflow, user=staff_user, data=changed, based_on_version=1)
    return workflow


def _version(workflow, n):
    return WorkflowVersion.objects.get(workflow=workflow, version=n)


def test_the_version_page_shows_the_diff_from_the_previous_version(staff_client, two_versions):
    v1, v2 = _version(two_versions, 1), _version(two_versions, 2)
    api = diff_workflow_documents(v1.snapshot, v2.snapshot)
    assert [n["key"] for n in api["nodes"]["added"]] == ["archive"]
    html = staff_client.get(admin_url(WorkflowVersion, "change", v2.pk)).content.decode()
    assert "Changes from version 1 to 2" in html
    assert '<tr class="diff-added"><td>added</td><td>node</td><td>Archive summary (archive, tool)</td>' in html
    assert '<tr class="diff-removed"><td>removed</td><td>node</td><td>Post to chat (post, tool)</td>' in html
    assert '<tr class="diff-changed"><td>changed</td><td>node</td><td>summarize</td>' in html
    assert "&quot;large&quot;" in html  # the changed parameter's new value
    assert '<td>added</td><td>edge</td><td>summarize → archive</td>' in html
    assert '<td>removed</td><td>edge</td><td>summarize → post</td>' in html
    first = staff_client.get(admin_url(WorkflowVersion, "change", v1.pk)).content.decode()
    assert "The first version: nothing to compare with." in first


def test_restore_makes_the_old_version_current_as_a_new_version(staff_client, two_versions):
    v1 = _version(two_versions, 1)
    page = staff_client.get(admin_url(WorkflowVersion, "change", v1.pk)).content.decode()
    assert 'data-role="restore"' in page and 'name="based_on_version" value="2"' in page
    response = staff_client.post(reverse("admin:registry_workflowversion_restore", args=[v1.pk]),
                                 {"based_on_version": "2"}, follow=True)
    assert response.redirect_chain[-1][0] == admin_url(Workflow, "change", two_versions.pk)
    assert [str(m) for m in response.context["messages"]] == [
        f"{two_versions.name}: version 1 restored as version 3."]
    two_versions.refresh_from_db()
    v3 = _version(two_versions, 3)
    assert (two_versions.version, v3.change, v3.restored_from) == (3, "restore", 1)
    keys = sorted(n["key"] for n in workflow_document(two_versions)["nodes"])
    assert keys == ["fetch", "post", "summarize"]


def test_restore_over_a_newer_version_is_refused_with_a_message(staff_client, staff_user, two_versions):
    v1 = _version(two_versions, 1)
    response = staff_client.post(reverse("admin:registry_workflowversion_restore", args=[v1.pk]),
                                 {"based_on_version": "1"}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        "Not restored: the workflow is at version 2, this page showed version 1. Reload the page and try again."]
    two_versions.refresh_from_db()
    assert two_versions.version == 2 and not WorkflowVersion.objects.filter(workflow=two_versions, version=3).exists()
    assert staff_client.get(reverse("admin:registry_workflowversion_restore", args=[v1.pk])).status_code == 405


def test_the_current_version_offers_no_restore(staff_client, two_versions):
    html = staff_client.get(admin_url(WorkflowVersion, "change", _version(two_versions, 2).pk)).content.decode()
    assert 'data-role="restore"' not in html
