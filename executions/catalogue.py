"""The built-in catalogue: one registered component per built-in operation of the engine
(executions/engine/runners/builtin.py), kept in step with it (`manage.py register_builtin_components`)."""

from __future__ import annotations

from django.db import transaction

from executions.engine.runners.builtin import BUILTIN_IMAGE, BUILTIN_OPERATIONS, BUILTIN_VERSION
from registry.models import Component, ComponentKind, ComponentRunner


# What the built-in runner gives back (executions/engine/contracts.py checks it): a step's or an
# item's output files, its decodes and image counts, and the per-image results of the operations
# that report some (in metrics.results and in data, one object per image).
_COUNT = {"type": "integer", "minimum": 0}
BUILTIN_OUTPUT_SCHEMA = {"type": "object", "required": ["files", "metrics"], "properties": {
    "files": {"type": "array", "items": {"type": "string", "format": "uuid"}},
    "metrics": {"type": "object", "required": ["decoded"], "properties": {
        "images": _COUNT, "decoded": _COUNT, "passed_through": _COUNT,
        "results": {"type": "array", "items": {"type": "object"}}}},
    "data": {"type": "array", "items": {"type": "object"}}}}


def builtin_components_register() -> dict[str, int]:
    """Create or update one component per built-in operation (runner "builtin"); idempotent.
    The records describe the engine's own code, so they are kept in step with it here, in place;
    a built-in whose behaviour changes gets a new BUILTIN_VERSION."""
    created = updated = 0
    with transaction.atomic():
        for operation in BUILTIN_OPERATIONS.values():
            values = {"description": operation.description, "docker_image": f"{BUILTIN_IMAGE}:{operation.name}",
                      "runner": ComponentRunner.BUILTIN, "input_schema": operation.input_schema,
                      # passthrough gives back each input: a map, as far as items go
                      "kind": ComponentKind.MERGE if operation.kind == "merge" else ComponentKind.MAP,
                      "deterministic": operation.kind != "passthrough",  # its pause is the point
                      "output_schema": BUILTIN_OUTPUT_SCHEMA,
                      "resource_requirements": {"cpu": 1, "memory": "256Mi", "gpu": 0,
                                                "inputs": {"min": operation.min_inputs, "max": operation.max_inputs}}}
            component = Component.objects.select_for_update().filter(name=operation.name, version=BUILTIN_VERSION).first()
            if component is None:
                Component.objects.create(name=operation.name, version=BUILTIN_VERSION, **values)
                created += 1
            elif any(getattr(component, key) != value for key, value in values.items()):
                for key, value in values.items():
                    setattr(component, key, value)
                component.save()
                updated += 1
    return {"created": created, "updated": updated, "total": len(BUILTIN_OPERATIONS)}
