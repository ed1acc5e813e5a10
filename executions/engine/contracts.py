"""The output contract: what a runner gives back is checked against its component's
`output_schema` before the engine records it, so a component that answers something other than
what it declared fails its step (naming the field) instead of handing it to the steps after it.

The document checked is the component's output as a step's `output_data` shows it::

    {"files": ["<id of each output file>", ...],   # in order
     "metrics": {...},                             # the runner's metrics (not the engine's own:
                                                   #   cpu_seconds, peak_memory_bytes, cache)
     "data": ...}                                  # JSON results, only when the runner gave some

An item of a map step is checked on its own share: its outputs, its metrics and its `data` (one
entry per image of the item), in the same shape; the step's joined `output_data` is not checked
again. So a schema of a map component describes what any batch of its inputs gives: per-image
constraints ("each entry of data has a label") hold for the whole step, while counts of arrays
(`minItems`, `maxItems`) apply to one item's share. A cache hit is not checked (the entry was
made by a run that was). A component without a schema (null, `{}` or `true`) is not checked.

Formats (`"format": "uuid"`) are checked where jsonschema has a checker for them.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from executions.engine.errors import StepFailure
from executions.engine.runners import RunResult
from registry.models import Component

# Validators by schema text, kept by the process: a component's schema is fixed once a run used
# it (registry.services), and a worker runs the same few components many times.
_VALIDATORS: dict[str, Any] = {}
_VALIDATORS_MAX = 256


def output_document(result: RunResult) -> dict[str, Any]:
    """The part of a runner's result that its component's output_schema describes."""
    document: dict[str, Any] = {"files": [str(f.id) for f in result.outputs], "metrics": result.metrics}
    if result.data is not None:
        document["data"] = result.data
    return document


def output_check(component: Component, result: RunResult) -> None:
    """Raise StepFailure naming the first field of the result that its component's output_schema
    refuses, e.g. `output of detect:1.0.0 does not match its output_schema at data[2].score: 'high' is
    not of type 'number'`."""
    schema = component.output_schema
    if schema in (None, True, {}):
        return
    validator = _validator(schema)
    if isinstance(validator, SchemaError):
        raise StepFailure(f"component {component.name}:{component.version} has an invalid output_schema: "
                          f"{validator.message}")
    errors = list(validator.iter_errors(output_document(result)))
    if not errors:
        return
    error = min(errors, key=lambda e: (len(e.absolute_path), [str(p) for p in e.absolute_path]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise StepFailure(f"output of {component.name}:{component.version} does not match its output_schema at "
                      f"{field_path(error)}: {error.message}{more}")


def field_path(error) -> str:
    """`metrics.decoded`, `data[0].labels[1].score`: where in the output the error is (a missing
    required property or an unexpected one is named itself)."""
    parts = list(error.absolute_path)
    if isinstance(error.instance, dict):
        if error.validator == "required":
            missing = [p for p in error.validator_value if p not in error.instance]
            parts += missing[:1]
        elif error.validator == "additionalProperties":
            allowed = set(error.schema.get("properties") or {})
            extra = sorted(k for k in error.instance if k not in allowed)
            parts += extra[:1]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(the output)"


def _validator(schema: Any):
    key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    validator = _VALIDATORS.get(key)
    if validator is None:
        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
            validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        except SchemaError as exc:
            validator = exc
        if len(_VALIDATORS) >= _VALIDATORS_MAX:
            _VALIDATORS.clear()
        _VALIDATORS[key] = validator
    return validator
