"""Who may see which rows: the one place that scopes querysets by ownership.

A non-staff user sees only rows they created (anything else is a 404, never a 403, so the API
does not reveal that a row exists); staff see all. Selectors and views call `scope_to_user` and
nothing else, so a wider scope (organizations) is added here once.

A request made with an organization-limited API token (imageflow/accounts/authentication.py puts
the token on the user as `api_token`) sees only that organization's rows, staff included: not
the user's personal rows, and nothing of models without an organization (files, executions).
"""

from __future__ import annotations

from django.db.models import Q, QuerySet


def token_organization_id(user):
    """The organization the request's API token is limited to, or None (not limited)."""
    token = getattr(user, "api_token", None)
    return token.organization_id if token is not None else None


def can_see_all(user) -> bool:
    return bool(user and user.is_authenticated and user.is_staff and token_organization_id(user) is None)


def scope_to_user(queryset: QuerySet, *, user, owner_field: str = "created_by") -> QuerySet:
    if can_see_all(user):
        return queryset
    if not user or not user.is_authenticated:
        return queryset.none()
    if (limit := token_organization_id(user)) is not None:
        if owner_field != "created_by" or not _has_organization(queryset.model):
            return queryset.none()
        if not user.is_staff:
            from imageflow.orgs.models import Membership

            if not Membership.objects.filter(user=user, organization_id=limit).exists():
                return queryset.none()
        return queryset.filter(organization_id=limit)
    if owner_field == "created_by" and _has_organization(queryset.model):
        # Organizations (workflow registry): members also see their organizations' rows.
        from imageflow.orgs.models import Membership

        org_ids = Membership.objects.filter(user=user).values("organization_id")
        return queryset.filter(Q(**{owner_field: user}) | Q(organization_id__in=org_ids))
    return queryset.filter(**{owner_field: user})


def _has_organization(model) -> bool:
    return any(f.name == "organization" and f.is_relation for f in model._meta.concrete_fields)


def is_owner(obj, *, user, owner_field: str = "created_by") -> bool:
    if can_see_all(user):
        return True
    if not (user and user.is_authenticated):
        return False
    if (limit := token_organization_id(user)) is not None:
        if owner_field != "created_by" or getattr(obj, "organization_id", None) != limit:
            return False
        from imageflow.orgs.models import Membership

        return user.is_staff or Membership.objects.filter(user=user, organization_id=limit).exists()
    if getattr(obj, f"{owner_field}_id", None) == user.pk:
        return True
    org_id = getattr(obj, "organization_id", None) if owner_field == "created_by" else None
    if org_id is None:
        return False
    from imageflow.orgs.models import Membership

    return Membership.objects.filter(user=user, organization_id=org_id).exists()
