"""Writes of components and pipelines (the API, the admin and commands call these).

Pipelines keep a complete history: every version, v1 included, has a `pipeline_versions` row.
A change of `definition` bumps `version` and records the new row in the same transaction, under
`select_for_update` of the pipeline, so concurrent edits get consecutive versions; a change of
name or description alone keeps the version.
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from imageflow.exceptions import ConflictError
from imageflow.validators import NUL_MESSAGE, json_nul_path, name_problem

from .dag import validate_definition
from .models import Component, ComponentKind, Pipeline, PipelineVersion

COMPONENT_FIELDS = ("name", "description", "docker_image", "version", "runner", "input_schema", "output_schema",
                    "resource_requirements")
# Set when a component is made, never changed: how a run fans its inputs out and whether its results
# may be reused follow from them, so steps already run and cached results would contradict a change.
# Another behaviour is another version.
COMPONENT_CREATE_FIELDS = ("kind", "deterministic")
# An ONNX component's model and spec: fixed like kind, since cached results and past steps came from them.
COMPONENT_MODEL_FIELDS = ("model_file", "model_spec")
PIPELINE_METADATA_FIELDS = ("name", "description")


# --- components ----------------------------------------------------------------------------------

def validate_json_schema(schema: Any, *, field: str) -> None:
    """Raise ValidationError naming `field` unless `schema` is a valid JSON Schema (or empty)."""
    if schema is None:
        return
    if not isinstance(schema, (dict, bool)):
        raise ValidationError({field: ["must be a JSON Schema object."]})
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise ValidationError({field: [f"invalid JSON Schema{f' at {where}' if where else ''}: {exc.message}"]}) from None


def component_check(*, data: dict[str, Any]) -> None:
    """The checks of a component's JSON fields that the database cannot make (the admin's form
    runs them before it saves, so its errors show on the fields)."""
    for field in ("input_schema", "output_schema", "resource_requirements"):
        nul = json_nul_path(data.get(field), root=field)
        if nul is not None:
            raise ValidationError({field: [f"{nul}: {NUL_MESSAGE}"]})
    validate_json_schema(data.get("input_schema"), field="input_schema")
    validate_json_schema(data.get("output_schema"), field="output_schema")
    resources = data.get("resource_requirements")
    if resources is not None and not isinstance(resources, dict):
        raise ValidationError({"resource_requirements": ["must be an object such as {\"cpu\": 1, \"memory\": \"512Mi\"}."]})


# Once a run used a component version it is what those steps ran: every field but the description
# is fixed (a change is a new version), so past steps, cached results and the pipelines naming the
# version keep meaning what they meant. The catalogue of built-ins (executions/catalogue.py) is the
# engine's own description of its code and kept in step with it there.
COMPONENT_FIELDS_CHANGEABLE_WHEN_USED = ("description",)


def component_used(component: Component) -> bool:
    """True once a run used the component: a row that protects it refers to it (the steps of runs),
    found through the model's relations, so the registry imports nothing of the app above it."""
    from django.db.models import PROTECT

    for relation in Component._meta.related_objects:
        if relation.on_delete is PROTECT and relation.related_model._default_manager.filter(
                **{relation.field.name: component.pk}).exists():
            return True
    return False


def _next_version(version: str) -> str:
    """1.0.0 -> 1.0.1, v2 -> v3, 2.1-beta -> 2.2-beta (the last number, counted up)."""
    import re

    head, number, tail = re.match(r"^(.*?)(\d+)(\D*)$", version).groups() if re.search(r"\d", version) else (
        version + ".", "0", "")
    return f"{head}{int(number) + 1}{tail}"


def component_change_check(*, component: Component, lock: bool = False) -> None:
    """Refuse (ValidationError on each changed field, naming the version and saying to make a new
    one) the changes `component` holds against its stored row when a run used that version. `lock`
    (in the saving transaction): the row FOR UPDATE, which a run's insert of steps naming it waits
    for, so no run starts on the old content while it changes. The admin's form runs it unlocked."""
    rows = Component.objects.select_for_update() if lock else Component.objects.all()
    stored = rows.filter(pk=component.pk).first()
    if stored is None:
        return
    changed = [field.name for field in Component._meta.concrete_fields
               if field.name not in {"id", "created_at", "updated_at", *COMPONENT_FIELDS_CHANGEABLE_WHEN_USED}
               and getattr(stored, field.attname) != getattr(component, field.attname)]
    if changed and component_used(stored):
        message = (f"component {stored.name}:{stored.version} has been used by runs and cannot be changed: create "
                   f"a new version (for example {stored.name}:{_next_version(stored.version)}) instead.")
        raise ValidationError({field: [message] for field in changed})


def _save_component(component: Component) -> Component:
    component.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            if not component._state.adding:
                component_change_check(component=component, lock=True)
            component.save()
    except IntegrityError as exc:
        if "components_name_version_uniq" in str(exc):
            raise ValidationError({"version": [f"component {component.name}:{component.version} already exists."]}) from None
        raise
    return component


def _onnx_model(*, model_file, model_spec: Any, data: dict[str, Any], kind: str | None) -> dict[str, Any]:
    """An ONNX component's model fields and generated schemas: the file is read and checked with
    onnx.checker, its signature stored, the spec checked against it and completed (defaults), and
    the parameter and output schemas generated from the spec (given ones must agree)."""
    from files.onnx_models import MODEL_MIME_TYPE, onnx_signature
    from files.services import file_read_bytes

    from .onnx_spec import model_spec_resolve, onnx_input_schema, onnx_output_schema

    if model_file is None:
        raise ValidationError({"model_file": ["an onnx component needs a model file (POST /api/v1/files/models/)."]})
    if model_file.mime_type != MODEL_MIME_TYPE:
        raise ValidationError({"model_file": [f"file {model_file.pk} is not an ONNX model ({model_file.mime_type})."]})
    if model_spec is None:
        raise ValidationError({"model_spec": ["an onnx component needs a spec: at least {\"task\": \"classify\"}."]})
    if kind not in {None, ComponentKind.MAP}:
        raise ValidationError({"kind": ["an onnx component is a map: each image is inferred on its own."]})
    try:
        signature = onnx_signature(file_read_bytes(model_file))
    except ValidationError as exc:
        raise ValidationError({"model_file": exc.messages}) from None
    resolved = model_spec_resolve(model_spec, signature=signature)
    generated = {"input_schema": onnx_input_schema(resolved), "output_schema": onnx_output_schema(resolved["task"])}
    for key, value in generated.items():
        if data.get(key) not in (None, value):
            raise ValidationError({key: ["generated from model_spec for an onnx component: leave it out."]})
    return {"model_file": model_file, "model_signature": signature, "model_spec": resolved,
            "kind": ComponentKind.MAP, **generated}


def component_model_check(*, model_spec: Any, content: bytes | None = None, model_file=None) -> dict[str, Any]:
    """Check an ONNX model (bytes, or a stored model file) and a spec against it; returns the
    completed spec. The admin's form runs it before anything is stored, so errors show on fields."""
    from files.onnx_models import onnx_signature
    from files.services import file_read_bytes

    from .onnx_spec import model_spec_resolve

    if model_spec is None:
        raise ValidationError({"model_spec": ["an onnx component needs a spec: at least {\"task\": \"classify\"}."]})
    try:
        signature = onnx_signature(content if content is not None else file_read_bytes(model_file))
    except ValidationError as exc:
        raise ValidationError({"model_file": exc.messages}) from None
    return model_spec_resolve(model_spec, signature=signature)


def component_create(*, name: str, version: str, docker_image: str = "", description: str | None = None,
                     runner: str = Component.Runner.CONTAINER, input_schema: dict | None = None,
                     output_schema: dict | None = None, resource_requirements: dict | None = None,
                     kind: str | None = None, deterministic: bool = False, model_file=None,
                     model_spec: dict | None = None) -> Component:
    """`kind` defaults to merge (map for onnx). An onnx component names its `model_file` and
    `model_spec` (docs/components.md); its `docker_image` defaults to "onnx:<model checksum>"."""
    data = {"input_schema": input_schema, "output_schema": output_schema, "resource_requirements": resource_requirements}
    component_check(data=data)
    model: dict[str, Any] = {}
    if runner == Component.Runner.ONNX:
        model = _onnx_model(model_file=model_file, model_spec=model_spec, data=data, kind=kind)
        data.update({key: model.pop(key) for key in ("input_schema", "output_schema")})
        kind = model.pop("kind")
        docker_image = docker_image or f"onnx:{model_file.checksum}"
    elif model_file is not None or model_spec is not None:
        given = {"model_file": model_file, "model_spec": model_spec}
        raise ValidationError({key: ["only an onnx component has a model."]
                               for key, value in given.items() if value is not None})
    component = Component(name=name, version=version, docker_image=docker_image, description=description,
                          runner=runner, kind=kind or ComponentKind.MERGE, deterministic=deterministic, **data, **model)
    return _save_component(component)


def component_update(*, component: Component, data: dict[str, Any]) -> Component:
    """Changes the fields of COMPONENT_FIELDS; `kind` and `deterministic` may be given only with
    the values the component has (a client sending back what it read)."""
    fixed = COMPONENT_CREATE_FIELDS + COMPONENT_MODEL_FIELDS
    changed = {key for key in fixed if key in data and data[key] != getattr(component, key)}
    if changed:
        raise ValidationError({key: ["cannot be changed once the component exists: create a new version."]
                               for key in sorted(changed)})
    data = {key: value for key, value in data.items() if key not in fixed}
    unknown = set(data) - set(COMPONENT_FIELDS)
    if unknown:
        raise ValidationError({key: ["cannot be changed."] for key in sorted(unknown)})
    onnx = Component.Runner.ONNX
    if "runner" in data and (data["runner"] == onnx) != (component.runner == onnx):
        raise ValidationError({"runner": ["cannot be changed to or from onnx: create a new version."]})
    if component.runner == onnx:
        generated = {key for key in ("input_schema", "output_schema")
                     if key in data and data[key] != getattr(component, key)}
        if generated:
            raise ValidationError({key: ["generated from model_spec for an onnx component: cannot be changed."]
                                   for key in sorted(generated)})
    component_check(data=data)
    for key, value in data.items():
        setattr(component, key, value)
    return _save_component(component)


def pipelines_using_component(component: Component):
    ref = {"nodes": [{"component": {"name": component.name, "version": component.version}}]}
    return Pipeline.objects.filter(definition__contains=ref)


def component_delete(*, component: Component) -> None:
    """Refuses (ConflictError) while a pipeline names the component or a run used it."""
    with transaction.atomic():
        users = list(pipelines_using_component(component).values_list("name", flat=True)[:5])
        if users:
            raise ConflictError(f"component {component} is used by pipelines: {', '.join(users)}.")
        try:
            component.delete()
        except ProtectedError:
            raise ConflictError(f"component {component} has executions and cannot be deleted.") from None


# --- pipelines -----------------------------------------------------------------------------------

def _record_version(pipeline: Pipeline, *, user) -> PipelineVersion:
    return PipelineVersion.objects.create(
        pipeline=pipeline, version=pipeline.version, name=pipeline.name, description=pipeline.description,
        definition=copy.deepcopy(pipeline.definition), created_by=user,
    )


def _check_metadata(name: Any) -> None:
    """The name rule (imageflow/validators.py) for callers that bypass the model form and the
    serializer (imports, clones, commands): a NUL or an over-long name would otherwise reach
    PostgreSQL and fail there."""
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValidationError({"name": ["must be a non-empty string."]})
    if name is None:
        return
    limit = Pipeline._meta.get_field("name").max_length
    if len(name) > limit:
        raise ValidationError({"name": [f"must be at most {limit} characters."]})
    problem = name_problem(name)
    if problem:
        raise ValidationError({"name": [problem]})


def pipeline_create(*, name: str, definition: dict, created_by, description: str | None = None) -> Pipeline:
    """Validate the DAG (registry.dag.DagValidationError names node and field) and store v1."""
    _check_metadata(name)
    validate_definition(definition)
    with transaction.atomic():
        pipeline = Pipeline.objects.create(name=name, description=description, definition=definition,
                                           version=1, created_by=created_by)
        _record_version(pipeline, user=created_by)
    return pipeline


def pipeline_update(*, pipeline: Pipeline, user, data: dict[str, Any]) -> Pipeline:
    """Apply a change of name/description/definition. A different definition bumps the version."""
    unknown = set(data) - {"name", "description", "definition"}
    if unknown:
        raise ValidationError({key: ["cannot be changed."] for key in sorted(unknown)})
    _check_metadata(data.get("name"))
    if "definition" in data:
        validate_definition(data["definition"])
    with transaction.atomic():
        locked = Pipeline.objects.select_for_update().get(pk=pipeline.pk)
        for key in PIPELINE_METADATA_FIELDS:
            if key in data:
                setattr(locked, key, data[key])
        definition_changed = "definition" in data and data["definition"] != locked.definition
        if definition_changed:
            locked.definition = data["definition"]
            locked.version += 1
        locked.save()
        if definition_changed:
            _record_version(locked, user=user)
    return locked


def pipeline_delete(*, pipeline: Pipeline) -> None:
    """Refuses (ConflictError) while executions of the pipeline exist: runs keep their history."""
    with transaction.atomic():
        try:
            pipeline.delete()
        except ProtectedError:
            raise ConflictError(f"pipeline {pipeline.name!r} has executions and cannot be deleted.") from None


def pipeline_clone(*, pipeline: Pipeline, user, name: str | None = None) -> Pipeline:
    """A new pipeline (v1, owned by `user`) with the source's current definition."""
    return pipeline_create(
        name=name or f"{pipeline.name} (copy)"[:255], description=pipeline.description,
        definition=copy.deepcopy(pipeline.definition), created_by=user,
    )
