from __future__ import annotations

from django.db.models import QuerySet

from .models import ApiToken


def api_token_list(*, user) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first, revoked ones included (their history stays visible).
    Staff see others' tokens in the admin, not here."""
    return ApiToken.objects.filter(user=user).select_related("organization").order_by("-created_at", "-id")
