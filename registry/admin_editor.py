"""The structured editor of a pipeline definition in the admin, and its preview endpoint.

The definition textarea stays the one field the form submits (experts may still edit the JSON);
`pipeline_editor.js` builds node rows (component picker, a parameter form from the component's
`input_schema`), edge rows (parent -> child) and the picture around it and keeps the textarea in
sync. On each change it posts the definition to `definition_preview_view`, which validates it
with registry.dag (as the save does) and answers the SVG and the errors."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, JsonResponse

from imageflow.api.errors import dag_errors_to_fields
from registry import dag_picture
from registry.models import Component

MAX_PREVIEW_BODY_BYTES = 1024 * 1024


def component_choices() -> list[dict[str, Any]]:
    """What the component picker offers, with each component's parameter schema (one query)."""
    return [
        {"name": name, "version": version, "description": description or "", "input_schema": schema or {}}
        for name, version, description, schema in Component.objects.order_by("name", "version")
        .values_list("name", "version", "description", "input_schema")
    ]


def error_lines(errors: list[dict[str, Any]]) -> list[str]:
    """The errors as the save lists them on the definition field (field path, then the node)."""
    return [f"{key}: {message}" for key, found in dag_errors_to_fields(errors).items() for message in found]


class DefinitionEditorWidget(forms.Textarea):
    """The definition's textarea inside the structured editor, with the picture of the definition
    as it stands when the page is rendered (no JavaScript needed to see it)."""

    template_name = "admin/registry/pipeline/definition_editor.html"

    def __init__(self, *, preview_url: str, components: list[dict[str, Any]], stored: tuple | None = None,
                 attrs: dict | None = None) -> None:
        base = {"rows": 14, "cols": 90, "style": "font-family: monospace;", "data-pipeline-definition": "1"}
        super().__init__(attrs={**base, **(attrs or {})})
        self.preview_url = preview_url
        self.components = components
        self.stored = stored  # (pipeline id, version, definition) of the saved pipeline

    def _picture(self, value: Any) -> dag_picture.Picture | None:
        if value in (None, ""):
            return None
        try:
            definition = json.loads(value) if isinstance(value, str) else value
        except ValueError:
            return dag_picture.Picture(svg=None, problem="the definition is not valid JSON.")
        if definition is None:
            return None  # a new pipeline: nothing to draw yet
        if self.stored is not None and definition == self.stored[2]:
            return dag_picture.pipeline_picture(kind="pipeline", object_id=self.stored[0], version=self.stored[1],
                                                definition=definition)
        return dag_picture.definition_preview(definition)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        pic = self._picture(self.format_value(value))
        context["editor"] = {
            "preview_url": self.preview_url,
            "components": self.components,
            "picture": dag_picture.as_html(pic) if pic is not None else "",
        }
        return context


def definition_preview_view(modeladmin, request):
    """POST {"definition": {...}} (JSON) -> {"svg", "errors", "lines", "problem"}; staff who may
    add or change pipelines only. Nothing is stored."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not (modeladmin.has_add_permission(request) or modeladmin.has_change_permission(request)):
        raise PermissionDenied
    if len(request.body) > MAX_PREVIEW_BODY_BYTES:
        return JsonResponse({"svg": None, "errors": [], "lines": [], "problem": "the definition is too big."}, status=413)
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return JsonResponse({"svg": None, "errors": [], "lines": [], "problem": "the body is not JSON."}, status=400)
    if not isinstance(body, dict) or "definition" not in body:
        return JsonResponse({"svg": None, "errors": [], "lines": [],
                             "problem": 'post {"definition": {...}}.'}, status=400)
    pic = dag_picture.definition_preview(body["definition"])
    return JsonResponse({"svg": pic.svg, "errors": pic.errors, "lines": error_lines(pic.errors),
                         "problem": pic.problem, "valid": not pic.errors})

