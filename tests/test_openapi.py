"""Property-based run of the OpenAPI contract: schemathesis generates requests for every
operation of /api/schema/ and calls the real app (in process, WSGI) against the real services.
No response may be a 5xx or contradict the schema (status code, content type, headers, body).

Bounded for CI: a few examples per operation (OPENAPI_FUZZ_EXAMPLES, default 6), no deadline.
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from registry import services as registry_services
from tests.factories import ComponentFactory, FileFactory, PipelineExecutionFactory, StaffFactory

MAX_EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "6"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


# Loaded at collection (schema generation touches no database). schemathesis' from_fixture does
# not work with pytest 9 (it sets Function._nodeid).
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@pytest.fixture
def keep_connection(db):
    """Like Django's test client: keep the test's connection (and its transaction) across requests."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def fuzz_world(keep_connection):
    """A staff user's token and real rows, so generated calls also reach existing resources."""
    user = StaffFactory()
    component = ComponentFactory(name="resize", version="1.0.0",
                                 input_schema={"type": "object", "properties": {"width": {"type": "integer"}}})
    pipeline = registry_services.pipeline_create(
        name="fuzz", definition={"nodes": [{"id": "a", "component": {"name": "resize", "version": "1.0.0"}}],
                                 "edges": []},
        created_by=user)
    file = FileFactory(created_by=user)
    execution = PipelineExecutionFactory(pipeline=pipeline, created_by=user)
    from registry.workflow_services import workflow_create
    from tests.registry.conftest import sample_document

    workflow, _ = workflow_create(user=user, data=sample_document())
    ids = {"/api/v1/components/": component.pk, "/api/v1/pipelines/": pipeline.pk, "/api/v1/files/": file.pk,
           "/api/v1/executions/": execution.pk, "/api/v1/workflows/": workflow.pk}
    return {"headers": {"Authorization": f"Token {Token.objects.create(user=user).key}"}, "ids": ids}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_contract(case, fuzz_world):
    if "id" in (case.path_parameters or {}):
        for prefix, pk in fuzz_world["ids"].items():
            if case.path.startswith(prefix):
                case.path_parameters["id"] = str(pk)
    case.call_and_validate(headers=fuzz_world["headers"], checks=CHECKS)
