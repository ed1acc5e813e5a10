from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import ApiToken, TokenScope, User


def user_ensure_staff(*, username: str, password: str) -> User:
    """Create the staff superuser `username` or reset its password; idempotent."""
    with transaction.atomic():
        user, _ = User.objects.select_for_update().get_or_create(username=username)
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(password)
        user.save()
    return user


# --- WebSocket / SSE tickets (docs/security.md) -----------------------------------------------
# A browser cannot set an Authorization header on a WebSocket or an EventSource, and an API token
# in a URL ends up in access logs, proxy logs and browser history. A ticket is what goes in the
# URL instead: random, bound to one user, valid for WS_TICKET_TTL_SECONDS and good for one
# connection, so a copy found in a log is worthless.

WS_TICKET_PREFIX = "ws-ticket:"


def ws_ticket_issue(*, user: User) -> str:
    """A ticket for `user` as the request authenticated them: a ticket asked for with a scoped
    token carries that token (its organization limit, its revocation), not the user's full access."""
    import secrets

    from django.conf import settings
    from django.core.cache import cache

    ticket = secrets.token_urlsafe(32)
    api_token = getattr(user, "api_token", None)
    value = f"{user.pk}:{api_token.pk}" if api_token is not None else str(user.pk)
    cache.set(WS_TICKET_PREFIX + ticket, value, timeout=settings.WS_TICKET_TTL_SECONDS)
    return ticket


def ws_ticket_redeem(*, ticket: str) -> User | None:
    """The active user the ticket was issued to, once: of two connections racing with the same
    ticket only the one whose delete removed the key wins (Redis DEL is atomic)."""
    from django.core.cache import cache

    if not ticket or len(ticket) > 128:
        return None
    key = WS_TICKET_PREFIX + ticket
    value = cache.get(key)
    if value is None or not cache.delete(key):
        return None
    user_pk, _, token_pk = str(value).partition(":")
    if token_pk:
        from .authentication import api_token_user

        return api_token_user(token_pk=token_pk)
    return User.objects.filter(pk=user_pk, is_active=True).first()


# --- Scoped API tokens (docs/security.md#api-tokens) -----------------------------------------
# `ifk_<prefix>_<secret>`: the prefix (8 characters) is kept in clear so a token can be named in
# lists, the admin and a support conversation; the whole string is hashed for lookup.

API_TOKEN_MARK = "ifk_"
API_TOKEN_TOUCH_SECONDS = 60  # last_used_at is written at most this often per token


def api_token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # the only copy: never stored, shown once


def api_token_create(*, user: User, name: str, scopes: Iterable[str], organization=None,
                     expires_at: datetime | None = None) -> IssuedToken:
    scopes = set(scopes)
    if not scopes or not scopes <= set(TokenScope.values):
        raise ValidationError({"scopes": [f"Choose one or more of {', '.join(TokenScope.values)}."]})
    scopes = sorted(scopes, key=TokenScope.values.index)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": ["Must be in the future."]})
    if organization is not None:
        from imageflow.orgs.models import Membership

        if not Membership.objects.filter(user=user, organization=organization).exists():
            raise ValidationError({"organization": [f"No such organization: {organization.pk}."]})
    prefix = secrets.token_hex(4)
    secret = f"{API_TOKEN_MARK}{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        if ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True).exists():
            raise ValidationError({"name": [f"You already have an active token named {name!r}."]})
        token = ApiToken.objects.create(user=user, name=name, prefix=f"{API_TOKEN_MARK}{prefix}",
                                        key_hash=api_token_hash(secret), scopes=scopes,
                                        organization=organization, expires_at=expires_at)
    return IssuedToken(token=token, secret=secret)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    """Idempotent: revoking a revoked token keeps its first revocation time."""
    ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db(fields=["revoked_at"])
    return token


def api_token_touch(*, token: ApiToken, now: datetime | None = None) -> None:
    """Record a use, at most once per API_TOKEN_TOUCH_SECONDS: a conditional UPDATE that matches
    no row (and writes nothing) while the last recorded use is recent, so a busy token costs one
    write a minute, not one per request."""
    now = now or timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < timedelta(seconds=API_TOKEN_TOUCH_SECONDS):
        return
    from django.db.models import Q

    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - timedelta(seconds=API_TOKEN_TOUCH_SECONDS))
    if ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now):
        token.last_used_at = now
