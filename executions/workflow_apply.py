"""Apply (run) a workflow: its params are validated (required, types, defaults), then the
workflow version is run by the execution engine as a tracked pipeline execution, in the same
execution history, pinned to the workflow version (`pipeline_executions.workflow`,
`.workflow_version`).

How a workflow version becomes a run: it is materialized once as a pipeline definition (a
carrier pipeline, category `workflow-apply`, named after the workflow and version):
- a node whose `node_type` names a registered component (or a `component` node with
  `parameters.component`) runs as that component, with its parameters;
- any other node (`agent`, `tool`, ...) runs through the HTTP runner (component
  `workflow-http`, runner `http`, see executions/engine/runners/http.py).
Per apply, the resolved params are substituted into node parameters (a string that is exactly
`{{params.<key>}}` becomes the typed value) and handed to the engine as per-node parameter
overrides, so one carrier pipeline serves every apply of that version.

It lives in executions, above the registry it reads: the registry's API endpoint and admin action
call it through registry/engine_hooks.py, which the executions app provides when it is ready.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from executions.models import PipelineExecution
from executions.services import execution_start
from imageflow.audit.services import audit_record
from imageflow.exceptions import ConflictError
from imageflow.validators import NUL_MESSAGE, json_nul_path
from registry.models import (
    CARRIER_PIPELINE_CATEGORY,
    Component,
    ComponentRunner,
    Pipeline,
    Workflow,
    WorkflowAccess,
    WorkflowVersion,
)
from registry.services import pipeline_create
from registry.similarity import node_component_name
from registry.workflow_document import (
    ParamValueError,
    check_param_value,
    clean_document,
    describe_cycle,
    document_cycle,
    parse_param_text,
)
from registry.workflow_selectors import workflow_document
from registry.workflow_services import workflow_access_record

HTTP_COMPONENT_NAME = "workflow-http"
HTTP_COMPONENT_VERSION = "1"
CARRIER_CATEGORY = CARRIER_PIPELINE_CATEGORY
PLACEHOLDER = re.compile(r"^\{\{\s*params\.([A-Za-z0-9_.\-]+)\s*\}\}$")


def resolve_params(*, declared: list[dict[str, Any]], values: Any) -> dict[str, Any]:
    """Values for every declared param: given (type-checked), else the default, else an error
    when required. Unknown keys are errors too. Raises ValidationError naming `params.<key>`."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValidationError({"params": ["must be an object of {key: value}."]})
    nul = json_nul_path(values, root="params")
    if nul is not None:
        raise ValidationError({nul: [NUL_MESSAGE]})
    errors: dict[str, list[str]] = {}
    by_key = {p["key"]: p for p in declared}
    for key in values:
        if key not in by_key:
            errors[f"params.{key}"] = [f"the workflow has no param {key!r} (known: {', '.join(sorted(by_key)) or 'none'})."]
    resolved: dict[str, Any] = {}
    for key, param in by_key.items():
        if key in values and values[key] is not None:
            try:
                resolved[key] = check_param_value(param["value_type"], values[key])
            except ParamValueError as exc:
                errors[f"params.{key}"] = [f"{param['value_type']}: {exc}"]
        elif param.get("default_value") is not None:
            try:
                resolved[key] = parse_param_text(param["value_type"], param["default_value"])
            except ParamValueError as exc:
                # A default stored before defaults were checked (or written around the services).
                errors[f"params.{key}"] = [f"{param['value_type']}: the stored default does not parse: {exc} "
                                           "Give a value or correct the default."]
        elif param.get("required"):
            errors[f"params.{key}"] = [f"required ({param['value_type']}); no value given and no default."]
        else:
            resolved[key] = None
    if errors:
        raise ValidationError(errors)
    return resolved


def substitute(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, str):
        match = PLACEHOLDER.match(value)
        if match and match.group(1) in params:
            return copy.deepcopy(params[match.group(1)])
        return value
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


def _acyclic_or_error(document: dict[str, Any]) -> None:
    cycle = document_cycle(document)
    if cycle is not None:
        raise ValidationError({"edges": [f"the workflow has a cycle: {describe_cycle(cycle)}; "
                                         "only acyclic workflows can be applied."]})


def http_component() -> Component:
    component, _ = Component.objects.get_or_create(
        name=HTTP_COMPONENT_NAME, version=HTTP_COMPONENT_VERSION,
        defaults={"runner": ComponentRunner.HTTP, "docker_image": "http", "input_schema": {"type": "object"},
                  "output_schema": {"type": "object"},
                  "description": "Runs a workflow agent/tool node by POSTing to WORKFLOW_HTTP_RUNNER_URL."},
    )
    return component


def _component_for(node: dict[str, Any], names: set[str]) -> Component | None:
    name = node_component_name(node, names)
    if name is None:
        return None
    params = node.get("parameters") or {}
    ref = params.get("component") if node["node_type"] == "component" else None
    version = ref.get("version") if isinstance(ref, dict) else params.get("component_version")
    queryset = Component.objects.filter(name=name)
    if version:
        queryset = queryset.filter(version=version)
    component = queryset.order_by("-created_at").first()
    if component is None:
        raise ValidationError({f"nodes.{node['key']}": [f"component {name}{':' + version if version else ''} "
                                                        "is not registered."]})
    return component


def materialize(*, workflow: Workflow, version: int, document: dict[str, Any]) -> tuple[dict, dict[str, dict]]:
    """The pipeline definition of a workflow version, and per node how to build its parameters."""
    if not document["nodes"]:
        raise ValidationError({"nodes": ["the workflow has no nodes to run."]})
    _acyclic_or_error(document)
    types = {n["node_type"] for n in document["nodes"]}
    names = set(Component.objects.filter(name__in=types).values_list("name", flat=True))
    http = None
    nodes, specs = [], {}
    handoff: dict[str, dict[str, Any]] = {}
    for edge in document["edges"]:
        handoff.setdefault(edge["child"], {})[edge["parent"]] = edge["handoff_data"]
    for node in document["nodes"]:
        component = _component_for(node, names)
        if component is None:
            http = http or http_component()
            component = http
            specs[node["key"]] = {"kind": "http", "node": node, "handoff": handoff.get(node["key"], {})}
        else:
            specs[node["key"]] = {"kind": "component", "node": node}
        nodes.append({"id": node["key"], "component": {"name": component.name, "version": component.version},
                      "parameters": {}})
    definition = {"nodes": nodes, "edges": [{"from": e["parent"], "to": e["child"]} for e in document["edges"]]}
    return definition, specs


def node_parameters(*, spec: dict[str, Any], workflow: Workflow, version: int, params: dict[str, Any]) -> dict:
    node = spec["node"]
    parameters = substitute(node.get("parameters") or {}, params)
    if spec["kind"] == "component":
        if node["node_type"] == "component":
            parameters = {k: v for k, v in parameters.items() if k not in {"component"}}
        return {k: v for k, v in parameters.items() if k != "component_version"}
    return {
        "workflow": {"id": str(workflow.pk), "name": workflow.name, "version": version},
        "node": {"key": node["key"], "name": node["name"], "node_type": node["node_type"]},
        "parameters": parameters, "params": params, "handoff": spec["handoff"],
    }


def _carrier_pipeline(*, workflow: Workflow, version: int, definition: dict, user) -> Pipeline:
    # The carrier belongs to the applying user, so their run never points at a pipeline they cannot see.
    owner = user if getattr(user, "is_authenticated", False) else None
    previous = (PipelineExecution.objects.filter(workflow=workflow, workflow_version=version,
                                                 pipeline__created_by=owner)
                .values_list("pipeline_id", flat=True).first())
    if previous is not None:
        pipeline = Pipeline.objects.filter(pk=previous, definition=definition).first()
        if pipeline is not None:
            return pipeline
    pipeline = pipeline_create(name=f"workflow: {workflow.name} v{version}"[:255],
                               description=f"Materialized from workflow {workflow.pk} version {version} to apply it.",
                               definition=definition, created_by=owner)
    Pipeline.objects.filter(pk=pipeline.pk).update(category=CARRIER_CATEGORY, organization=workflow.organization)
    return pipeline


def workflow_apply(*, workflow: Workflow, user, params: Any = None, inputs: list | None = None,
                   idempotency_key: str | None = None):
    """Validate params against the workflow's declared params and start a run of its current
    version through the engine. Returns the PipelineExecution (pending; the worker runs it)."""
    version = workflow.version
    pinned = WorkflowVersion.objects.filter(workflow=workflow, version=version).first()
    # Rows written before version history existed have no snapshot: their current rows are the version.
    snapshot = pinned.snapshot if pinned is not None else clean_document(workflow_document(workflow))
    resolved = resolve_params(declared=snapshot["params"], values=params)
    with transaction.atomic():
        # Materializing may create the shared HTTP component; inside the transaction, so an apply
        # the engine then refuses (an unknown input file, a bad Idempotency-Key) leaves no row.
        definition, specs = materialize(workflow=workflow, version=version, document=snapshot)
        overrides = {key: node_parameters(spec=spec, workflow=workflow, version=version, params=resolved)
                     for key, spec in specs.items()}
        # One apply of a workflow at a time finds or creates its carrier: no twin carriers.
        Workflow.objects.select_for_update().filter(pk=workflow.pk).exists()
        pipeline = _carrier_pipeline(workflow=workflow, version=version, definition=definition, user=user)
        execution = execution_start(pipeline=pipeline, inputs=list(inputs or []), parameters=overrides, user=user,
                                    idempotency_key=idempotency_key)
        if execution.pipeline_id != pipeline.pk or execution.workflow_id not in (None, workflow.pk):
            # The key already named a run of something else: never hand that run back as this apply.
            raise ConflictError("This Idempotency-Key was already used for another pipeline or workflow run.")
        if execution.workflow_id is None:
            type(execution).objects.filter(pk=execution.pk).update(workflow=workflow, workflow_version=version)
            execution.workflow_id, execution.workflow_version = workflow.pk, version
            workflow_access_record(workflow=workflow, user=user, kind=WorkflowAccess.Kind.APPLY)
            audit_record(action="apply", object_type="workflow", object_id=workflow.pk,
                         object_repr=f"{workflow.name} (v{version})", after={"params": resolved},
                         extra={"version": version, "execution": str(execution.pk), "pipeline": str(pipeline.pk)},
                         user=user)
    return execution, resolved
