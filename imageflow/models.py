"""Building blocks shared by every app's models."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from django.db import models


class UUIDModel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)

    class Meta:
        abstract = True


class TimestampedModel(UUIDModel):
    """created_at/updated_at; a database trigger (migration 0002 of each app) keeps updated_at
    right for writes that bypass save(), such as QuerySet.update()."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def choices_check(*, field: str, choices: Iterable[tuple[str, str]] | type[models.TextChoices], name: str):
    """A CHECK constraint that keeps `field` within its choices at the database level."""
    values = [value for value, _ in (choices.choices if hasattr(choices, "choices") else choices)]
    return models.CheckConstraint(condition=models.Q(**{f"{field}__in": values}), name=name)
