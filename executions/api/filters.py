"""Filters of `GET /executions/` (every parameter optional, combined with AND)."""

from __future__ import annotations

import django_filters
from rest_framework.exceptions import ValidationError
from django.db.models import Q

from executions.models import ExecutionStatus, PipelineExecution
from imageflow.api.params import to_utc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 with any offset, compared in UTC (PostgreSQL refuses offsets beyond +-15:59)."""

    def filter(self, qs, value):
        if value is None:
            return qs
        return super().filter(qs, to_utc(value, name=self.field_name))


class ExecutionFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=ExecutionStatus.choices, method="filter_status",
        help_text="One or more statuses: repeat the parameter or separate with commas.",
    )
    pipeline = django_filters.UUIDFilter(field_name="pipeline_id")
    pipeline_version = django_filters.NumberFilter(field_name="pipeline_version")
    created_by = django_filters.UUIDFilter(field_name="created_by_id")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")
    started_after = UTCDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = UTCDateTimeFilter(field_name="started_at", lookup_expr="lt")
    completed_after = UTCDateTimeFilter(field_name="completed_at", lookup_expr="gte")
    completed_before = UTCDateTimeFilter(field_name="completed_at", lookup_expr="lt")
    q = django_filters.CharFilter(method="filter_text",
                                  help_text="Text in the pipeline's name or description or the error message.")

    class Meta:
        model = PipelineExecution
        fields: list[str] = []

    def __init__(self, data=None, *args, **kwargs):
        if data is not None and "status" in data:
            # Accept comma-separated lists as well as repeated parameters.
            data = data.copy()
            values = [part.strip() for raw in data.getlist("status") for part in raw.split(",") if part.strip()]
            data.setlist("status", values)
        super().__init__(data, *args, **kwargs)

    def filter_status(self, queryset, name, value):
        if not value:
            return queryset
        values = list(dict.fromkeys(value))
        return queryset.filter(status=values[0]) if len(values) == 1 else queryset.filter(status__in=values)

    def filter_text(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if "\x00" in value:
            raise ValidationError({"q": ["Null characters are not allowed."]})
        return queryset.filter(Q(pipeline__name__icontains=value) | Q(pipeline__description__icontains=value)
                               | Q(error_message__icontains=value))
