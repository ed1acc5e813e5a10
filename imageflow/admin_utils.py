"""Admin helpers shared by every app: JSON shown pretty-printed, timestamps read-only, read-only
records, deletes through the services with their refusals shown as messages, and the paginator of
the lists of big tables."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import models, transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.functional import cached_property
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


class ReadOnlyAdminMixin:
    """Records written by services only (history, logs, runs): viewable, never added, changed or
    deleted by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def validation_messages(exc: ValidationError) -> dict[str, list[str]]:
    """A ValidationError as {field: [message, ...]} ("__all__" for errors not about a field)."""
    if hasattr(exc, "error_dict"):
        return {key: [str(m) for m in messages] for key, messages in exc.message_dict.items()}
    return {"__all__": [str(m) for m in exc.messages]}


def service_refusal_text(exc: Exception) -> str:
    """One line for an admin message: what the service refused and why."""
    if isinstance(exc, ValidationError):
        parts = []
        for key, messages in validation_messages(exc).items():
            parts.append(" ".join(messages) if key == "__all__" else f"{key}: {' '.join(messages)}")
        return "; ".join(parts)
    return str(exc)


def _delete_refusals() -> tuple[type[Exception], ...]:
    from imageflow.exceptions import ConflictError

    return (ConflictError, ValidationError)


@admin.action(permissions=["delete"], description="Delete selected %(verbose_name_plural)s")
def delete_selected_through_service(modeladmin, request, queryset):
    """Django's bulk delete (its confirmation page included), except that each object is deleted by
    the admin's service, and an object the service refuses to delete is reported, not a 500."""
    from django.contrib.admin.actions import delete_selected

    if not request.POST.get("post"):
        return delete_selected(modeladmin, request, queryset)
    deleted = 0
    for obj in queryset:
        shown = str(obj)
        try:
            with transaction.atomic():
                modeladmin.log_deletions(request, type(obj).objects.filter(pk=obj.pk))
                modeladmin.service_delete(request, obj)
        except _delete_refusals() as exc:
            modeladmin.message_user(request, f"{shown}: not deleted: {service_refusal_text(exc)}", messages.ERROR)
        else:
            deleted += 1
    if deleted:
        from django.contrib.admin.utils import model_ngettext

        modeladmin.message_user(request, f"Deleted {deleted} {model_ngettext(modeladmin.opts, deleted)}.",
                                messages.SUCCESS)
    return None


class ServiceDeleteMixin:
    """Deletes go through the app's service (`service_delete`), which may refuse (ConflictError:
    still used; ValidationError): the refusal is shown as a message on the object's page."""

    def service_delete(self, request, obj) -> None:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{type(self).__name__} uses ServiceDeleteMixin without a service_delete")

    def delete_model(self, request, obj):
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.service_delete(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            actions["delete_selected"] = (delete_selected_through_service, "delete_selected",
                                          delete_selected_through_service.short_description)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except _delete_refusals() as exc:
            # The admin's delete ran in a transaction that the refusal rolled back.
            self.message_user(request, f"Not deleted: {service_refusal_text(exc)}", messages.ERROR)
            info = (self.model._meta.app_label, self.model._meta.model_name)
            return HttpResponseRedirect(reverse(f"admin:{info[0]}_{info[1]}_change", args=[object_id],
                                                current_app=self.admin_site.name))


class EstimatedCountPaginator(Paginator):
    """Django's paginator, except that an unfiltered list of a big table takes its row count from
    PostgreSQL's estimate (pg_class.reltuples, kept by autovacuum / ANALYZE) instead of a
    COUNT(*) that reads every row (20 ms at 100,000 files, growing with the table). Below
    EXACT_BELOW rows, and for any filtered or searched list, the count is exact."""

    EXACT_BELOW = 50_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if query is not None and not query.where and not query.distinct and not query.combinator:
            estimate = _estimated_rows(self.object_list.model._meta.db_table)
            if estimate >= self.EXACT_BELOW:
                return estimate
        return super().count


def _estimated_rows(table: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else -1  # -1: never analyzed


class LargeListAdminMixin:
    """A list of a table that grows without bound (files, runs, steps): the estimated count for the
    unfiltered list, and no second COUNT(*) of the whole table for the "(N total)" of a filtered
    one. Fifty rows a page: a row of these lists (thumbnail, badges, progress) costs its rendering,
    and a hundred of them on the page took the list past its 150 ms (docs/benchmarks.md)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
