"""Admin helpers shared by every app: JSON shown pretty-printed, timestamps read-only."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.utils.html import format_html


class PrettyJSONFormField(forms.JSONField):
    def prepare_value(self, value: Any) -> str:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, cls=self.encoder)


class PrettyJSONWidget(forms.Textarea):
    def __init__(self, attrs: dict | None = None) -> None:
        base = {"rows": 12, "cols": 90, "style": "font-family: monospace;"}
        super().__init__(attrs={**base, **(attrs or {})})


def pretty_json(value: Any) -> str:
    """Read-only JSON, indented, for list and detail pages."""
    if value in (None, "", {}, []):
        return "—"
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))


class ImageFlowModelAdmin(admin.ModelAdmin):
    """Base admin: pretty JSON editing and read-only timestamps."""

    formfield_overrides = {
        models.JSONField: {"form_class": PrettyJSONFormField, "widget": PrettyJSONWidget},
    }
    timestamp_fields = ("id", "created_at", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        model_fields = {f.name for f in self.model._meta.get_fields()}
        stamps = tuple(f for f in self.timestamp_fields if f in model_fields)
        return tuple(super().get_readonly_fields(request, obj)) + stamps


class ImageFlowInline:
    formfield_overrides = ImageFlowModelAdmin.formfield_overrides
