"""Writing audit entries. Called inside the transaction of the change it records, so an entry
exists exactly when the change was committed."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from imageflow.audit.context import current_actor
from imageflow.audit.models import AuditEntry


def json_safe(value: Any) -> Any:
    """Dates, UUIDs and decimals as JSON strings, so any snapshot fits a JSONField."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def model_state(instance: models.Model) -> dict[str, Any]:
    """The concrete field values of a row (foreign keys as ids), JSON-safe."""
    data: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if field.name in {"search_vector"}:
            continue
        data[field.attname] = field.value_from_object(instance)
    return json_safe(data)


def audit_record(
    *,
    action: str,
    object_type: str,
    object_id: uuid.UUID | str,
    object_repr: str = "",
    before: Any = None,
    after: Any = None,
    extra: dict[str, Any] | None = None,
    user: Any = None,
    source: str | None = None,
) -> AuditEntry:
    actor = current_actor()
    user = user if user is not None else actor.user
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return AuditEntry.objects.create(
        actor=user,
        actor_username=getattr(user, "username", "") if user is not None else "",
        action=action,
        source=source or actor.source,
        object_type=object_type,
        object_id=object_id,
        object_repr=str(object_repr)[:300],
        before=json_safe(before) if before is not None else None,
        after=json_safe(after) if after is not None else None,
        extra=json_safe(extra) if extra else None,
    )
