"""The HTTP runner: an `agent`/`tool` node of an applied workflow that names no registered
component is run by POSTing to `WORKFLOW_HTTP_RUNNER_URL` (one service that hosts the agents
and tools). Request body (JSON)::

    {"workflow": {"id", "name", "version"},
     "node": {"key", "name", "node_type"},
     "parameters": {...},            # the node's parameters, workflow params substituted
     "params": {...},                # the workflow's resolved params
     "inputs": {"<parent key>": {"output": <the parent's JSON reply>, "handoff_data": {...}}}}

The JSON reply is the node's output (`output_data.data` of its step) and is handed to its
children. A 5xx or connection error is transient (the engine retries with backoff); a 4xx or a
reply that is not JSON fails the step with the reply quoted.
"""

from __future__ import annotations

from typing import Any

import requests
from django.conf import settings

from executions.engine.errors import StepFailure, TransientStepError
from executions.engine.runners import RunResult, StepContext
from executions.models import ComponentExecution


class HttpRunner:
    def payload(self, context: StepContext) -> dict[str, Any]:
        spec = context.parameters
        parents = list((context.step.input_data or {}).get("parents") or [])
        outputs = dict(ComponentExecution.objects.filter(execution_id=context.step.execution_id, node_id__in=parents)
                       .values_list("node_id", "output_data"))
        handoff = spec.get("handoff") or {}
        return {
            "workflow": spec.get("workflow") or {},
            "node": spec.get("node") or {"key": context.step.node_id},
            "parameters": spec.get("parameters") or {},
            "params": spec.get("params") or {},
            "inputs": {parent: {"output": (outputs.get(parent) or {}).get("data"), "handoff_data": handoff.get(parent)}
                       for parent in parents},
        }

    def run(self, context: StepContext) -> RunResult:
        url = settings.WORKFLOW_HTTP_RUNNER_URL
        context.log("info", f"POST {url} for node {context.step.node_id}")
        try:
            response = requests.post(url, json=self.payload(context),
                                     timeout=settings.WORKFLOW_HTTP_RUNNER_TIMEOUT_SECONDS)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientStepError(f"HTTP runner {url} unreachable: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise TransientStepError(f"HTTP runner answered {response.status_code}: {response.text[:300]}")
        if response.status_code >= 400:
            raise StepFailure(f"HTTP runner answered {response.status_code}: {response.text[:1000]}")
        try:
            data = response.json()
        except ValueError:
            raise StepFailure(f"HTTP runner reply is not JSON: {response.text[:300]!r}") from None
        return RunResult(outputs=[], metrics={"http_status": response.status_code,
                                              "elapsed_ms": int(response.elapsed.total_seconds() * 1000)}, data=data)
