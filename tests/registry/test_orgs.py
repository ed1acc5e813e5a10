"""Organizations: members see (and may change) their organization's workflows and pipelines,
others get 404, staff see all; pipelines get category/tags/organization labels."""

import pytest
from rest_framework.test import APIClient

from registry.models import Component, Pipeline
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def org_setup():
    org = OrganizationFactory(name="Acme")
    author, colleague, outsider = UserFactory(), UserFactory(), UserFactory()
    MembershipFactory(organization=org, user=author)
    MembershipFactory(organization=org, user=colleague)
    MembershipFactory(user=outsider)  # a member of another organization
    return org, client_for(author), client_for(colleague), client_for(outsider)


def test_members_see_the_organizations_workflows_and_others_get_404(org_setup, staff_user):
    org, author, colleague, outsider = org_setup
    created = author.post("/api/v1/workflows/", {**sample_document(), "organization": str(org.pk)}, format="json")
    assert created.status_code == 201 and created.json()["organization"] == str(org.pk)
    url = f"/api/v1/workflows/{created.json()['id']}/"
    assert colleague.get(url).status_code == 200
    assert [w["id"] for w in colleague.get("/api/v1/workflows/").json()["results"]] == [created.json()["id"]]
    assert outsider.get(url).status_code == 404 and outsider.get("/api/v1/workflows/").json()["count"] == 0
    assert client_for(staff_user).get(url).status_code == 200
    # a colleague may change it (it is the organization's), the outsider may not even find it
    assert colleague.put(url, {**sample_document(name="Team edit"), "version": 1}, format="json").status_code == 200
    assert outsider.delete(url).status_code == 404


def test_cannot_put_a_workflow_into_someone_elses_organization(org_setup):
    org, _, _, outsider = org_setup
    response = outsider.post("/api/v1/workflows/", {**sample_document(), "organization": str(org.pk)}, format="json")
    assert response.status_code == 400 and "organization" in response.json()["errors"]


def test_organizations_endpoint_lists_only_mine(org_setup):
    org, author, _, outsider = org_setup
    assert [o["name"] for o in author.get("/api/v1/organizations/").json()["results"]] == ["Acme"]
    assert "Acme" not in [o["name"] for o in outsider.get("/api/v1/organizations/").json()["results"]]


def test_pipeline_labels_scope_and_filters(org_setup):
    org, author, colleague, outsider = org_setup
    Component.objects.create(name="blur", version="1.0.0", docker_image="x", runner="builtin",
                             input_schema={"type": "object"})
    definition = {"nodes": [{"id": "b", "component": {"name": "blur", "version": "1.0.0"}}], "edges": []}
    pipeline_id = author.post("/api/v1/pipelines/", {"name": "p", "definition": definition}, format="json").json()["id"]
    assert colleague.get(f"/api/v1/pipelines/{pipeline_id}/").status_code == 404  # not shared yet
    response = author.put(f"/api/v1/pipelines/{pipeline_id}/labels/",
                          {"category": "thumbs", "tags": ["Web", "img"], "organization": str(org.pk)}, format="json")
    assert response.status_code == 200 and response.json()["tags"] == ["img", "web"]
    assert colleague.get(f"/api/v1/pipelines/{pipeline_id}/").json()["tags"] == ["img", "web"]
    assert outsider.get(f"/api/v1/pipelines/{pipeline_id}/").status_code == 404
    assert [p["id"] for p in colleague.get("/api/v1/pipelines/?tag=web&category=thumbs").json()["results"]] == [pipeline_id]
    assert colleague.get("/api/v1/pipelines/?tag=other").json()["results"] == []
    assert Pipeline.objects.get(pk=pipeline_id).version == 1


def test_moving_a_workflow_into_an_organization_is_audited_without_a_new_version(org_setup):
    from imageflow.audit.models import AuditEntry

    org, author, colleague, _ = org_setup
    created = author.post("/api/v1/workflows/", sample_document(), format="json").json()
    url = f"/api/v1/workflows/{created['id']}/"
    assert colleague.get(url).status_code == 404
    moved = author.put(url, {**sample_document(), "version": 1, "organization": str(org.pk)}, format="json")
    assert moved.status_code == 200 and moved.json()["version"] == 1 and moved.json()["organization"] == str(org.pk)
    assert colleague.get(url).status_code == 200
    entry = AuditEntry.objects.filter(object_id=created["id"]).order_by("-created_at").first()
    assert entry.before == {"organization": None} and entry.after == {"organization": str(org.pk)}
