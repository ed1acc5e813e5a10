from __future__ import annotations

from .ownership import scope_to_user


class OwnedQuerysetMixin:
    """get_queryset() scoped to the requesting user; `base_queryset()` gives the unscoped rows."""

    owner_field = "created_by"

    def base_queryset(self):
        return self.queryset.all()

    def get_queryset(self):
        return scope_to_user(self.base_queryset(), user=self.request.user, owner_field=self.owner_field)
