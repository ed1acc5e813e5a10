"""Query-string values read by views outside django-filter, validated the same way."""

from __future__ import annotations

from datetime import UTC, datetime

from rest_framework.exceptions import ValidationError


def text_param(request, name: str) -> str | None:
    """A free-text query parameter; NUL characters (which PostgreSQL text cannot hold) are a 400."""
    value = request.query_params.get(name)
    if value is None:
        return None
    if "\x00" in value:
        raise ValidationError({name: ["Null characters are not allowed."]})
    return value.strip() or None


def to_utc(value: datetime, *, name: str) -> datetime:
    """An aware datetime in UTC; exotic offsets at the edges of the calendar are a 400, not a 500."""
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError({name: ["Date and time out of range."]}) from None
