""""Not found or not yours" is one answer: an id of another user's row is answered exactly as an
id that does not exist, wherever an id is taken from a request body, so ids cannot be probed."""

from __future__ import annotations

import uuid

import pytest

from executions.models import PipelineExecution
from registry import services as registry_services
from registry.models import Workflow
from tests.api.conftest import client_for, definition
from tests.factories import ComponentFactory, FileFactory, MembershipFactory, OrganizationFactory, UserFactory
from tests.registry.conftest import sample_document

pytestmark = pytest.mark.django_db


def _without(body: dict, value: str) -> dict:
    """The answer with the probed id blanked out, to compare two answers' shapes and words."""
    import json

    return json.loads(json.dumps(body).replace(value, "<id>"))


def test_running_a_pipeline_with_another_users_file_says_what_a_random_id_says():
    owner = UserFactory()
    ComponentFactory(name="resize", version="1.0.0", runner="builtin",
                     input_schema={"type": "object", "properties": {"width": {"type": "integer"}}})
    pipeline = registry_services.pipeline_create(name="thumbs", description="", definition=definition(), created_by=owner)
    foreign = str(FileFactory(created_by=UserFactory()).pk)
    random_id = str(uuid.uuid4())
    api = client_for(owner)
    url = f"/api/v1/pipelines/{pipeline.pk}/run/"

    theirs = api.post(url, {"inputs": [foreign]}, format="json")
    nobodys = api.post(url, {"inputs": [random_id]}, format="json")

    assert theirs.status_code == nobodys.status_code == 400
    assert theirs.json()["errors"] == {"inputs": [f"No such file: {foreign}."]}
    assert _without(theirs.json(), foreign) == _without(nobodys.json(), random_id)
    assert PipelineExecution.objects.count() == 0


def test_applying_a_workflow_with_another_users_file_says_what_a_random_id_says():
    owner = UserFactory()
    api = client_for(owner)
    created = api.post("/api/v1/workflows/", sample_document(), format="json").json()
    foreign = str(FileFactory(created_by=UserFactory()).pk)
    random_id = str(uuid.uuid4())
    url = f"/api/v1/workflows/{created['id']}/apply/"
    params = {"url": "https://example.org/a"}

    theirs = api.post(url, {"params": params, "inputs": [foreign]}, format="json")
    nobodys = api.post(url, {"params": params, "inputs": [random_id]}, format="json")

    assert theirs.status_code == nobodys.status_code == 400, theirs.json()
    assert theirs.json()["errors"] == {"inputs": [f"No such file: {foreign}."]}
    assert _without(theirs.json(), foreign) == _without(nobodys.json(), random_id)
    assert PipelineExecution.objects.count() == 0


def test_an_organization_one_is_not_a_member_of_reads_as_one_that_does_not_exist():
    outsider = UserFactory()
    MembershipFactory(user=outsider)  # a member of some other organization
    theirs_id = str(OrganizationFactory().pk)
    random_id = str(uuid.uuid4())
    api = client_for(outsider)

    theirs = api.post("/api/v1/workflows/", {**sample_document(), "organization": theirs_id}, format="json")
    nobodys = api.post("/api/v1/workflows/", {**sample_document(), "organization": random_id}, format="json")

    assert theirs.status_code == nobodys.status_code == 400
    assert theirs.json()["errors"] == {"organization": [f"No such organization: {theirs_id}."]}
    assert _without(theirs.json(), theirs_id) == _without(nobodys.json(), random_id)
    assert Workflow.objects.count() == 0
