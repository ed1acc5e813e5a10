"""X-Request-ID: taken or made, on the response, in the request's log lines (text and JSON), stored
on the run it starts and in the `extra` of the run's shipped log records."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from executions import logs
from executions.logstore.documents import alias_name
from executions.logstore.shipping import ship_pending
from executions.models import PipelineExecution
from imageflow.logging_json import JsonFormatter
from imageflow.request_id import RequestIdLogFilter, RequestIdMiddleware
from registry import services as registry_services
from tests.api.conftest import definition
from tests.factories import FileFactory

pytestmark = pytest.mark.django_db


def start_run(api, owner, **headers):
    pipeline = registry_services.pipeline_create(name="thumbs", description="", definition=definition(),
                                                 created_by=owner)
    image = FileFactory(created_by=owner)
    return api.post(f"/api/v1/pipelines/{pipeline.pk}/run/", {"inputs": [str(image.pk)]}, format="json", **headers)


def test_the_callers_request_id_is_stored_on_the_run_and_in_every_shipped_record(api, owner, resize, es):
    response = start_run(api, owner, HTTP_X_REQUEST_ID="lb-7f3a9c")
    assert response.status_code == 202
    assert response["X-Request-ID"] == "lb-7f3a9c"
    execution = PipelineExecution.objects.get(pk=response.json()["id"])
    assert execution.input_data["request_id"] == "lb-7f3a9c"
    # A step's record written later by a worker (outside the request) carries it once shipped.
    step = execution.steps.get()
    logs.emit(execution_id=execution.id, step_id=step.id, node_id=step.node_id, level="info",
              message="resized", width=64)
    ship_pending(refresh=True)
    hits = es.search(index=alias_name(), query={"term": {"execution_id": str(execution.id)}}, size=10)["hits"]["hits"]
    extras = sorted((hit["_source"]["message"][:8], hit["_source"]["extra"]) for hit in hits)
    assert len(extras) == 2  # "execution created ..." and the step's line
    assert all(extra["request_id"] == "lb-7f3a9c" for _, extra in extras)
    assert ("resized", {"width": 64, "request_id": "lb-7f3a9c"}) in extras


def test_an_unsafe_request_id_is_replaced_by_a_new_one(api, owner, resize):
    response = start_run(api, owner, HTTP_X_REQUEST_ID='forged" level=error\nx')
    new_id = response["X-Request-ID"]
    assert len(new_id) == 32 and int(new_id, 16) >= 0
    assert PipelineExecution.objects.get(pk=response.json()["id"]).input_data["request_id"] == new_id


def test_a_run_started_outside_a_request_has_no_request_id(owner, resize):
    from executions.services import execution_start

    pipeline = registry_services.pipeline_create(name="cli", description="", definition=definition(), created_by=owner)
    execution = execution_start(pipeline=pipeline, inputs=[str(FileFactory(created_by=owner).pk)], user=owner)
    assert "request_id" not in execution.input_data


def test_every_log_line_of_a_request_carries_its_id_as_json(rf):
    lines: list[str] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(JsonFormatter())
    handler.emit = lambda record: lines.append(handler.format(record))
    logger = logging.getLogger("tests.deploy.request")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def view(request):
        logger.info("in the view %s", "now", extra={"execution_id": "e-1"})
        from django.http import HttpResponse

        return HttpResponse("ok")

    try:
        response = RequestIdMiddleware(view)(rf.get("/x", HTTP_X_REQUEST_ID="abc-123"))
        logger.info("after the request")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in lines)
    assert response["X-Request-ID"] == "abc-123"
    assert inside["request_id"] == "abc-123" and inside["message"] == "in the view now"
    assert inside["execution_id"] == "e-1" and inside["level"] == "info" and inside["logger"] == "tests.deploy.request"
    assert datetime.fromisoformat(inside["ts"]).tzinfo == UTC
    assert outside["request_id"] == "-"
