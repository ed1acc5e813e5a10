"""Who may see which rows: the one place that scopes querysets by ownership.

A non-staff user sees only rows they created (anything else is a 404, never a 403, so the API
does not reveal that a row exists); staff see all. Selectors and views call `scope_to_user` and
nothing else, so a wider scope (organizations) is added here once.
"""

from __future__ import annotations

from django.db.models import QuerySet


def can_see_all(user) -> bool:
    return bool(user and user.is_authenticated and user.is_staff)


def scope_to_user(queryset: QuerySet, *, user, owner_field: str = "created_by") -> QuerySet:
    if can_see_all(user):
        return queryset
    if not user or not user.is_authenticated:
        return queryset.none()
    return queryset.filter(**{owner_field: user})


def is_owner(obj, *, user, owner_field: str = "created_by") -> bool:
    if can_see_all(user):
        return True
    return bool(user and user.is_authenticated and getattr(obj, f"{owner_field}_id", None) == user.pk)
