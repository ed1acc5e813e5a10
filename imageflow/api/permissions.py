from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from .ownership import is_owner


class IsOwnerOrStaff(BasePermission):
    """Object-level guard behind the scoped queryset (which already hides others' rows)."""

    owner_field = "created_by"

    def has_object_permission(self, request, view, obj) -> bool:
        return is_owner(obj, user=request.user, owner_field=getattr(view, "owner_field", self.owner_field))


class IsStaffOrReadOnly(BasePermission):
    """Shared catalogue rows (components): every signed-in user reads, staff write."""

    message = "Only staff may change components."

    def has_permission(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_staff)
