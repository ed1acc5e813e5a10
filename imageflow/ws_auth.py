"""WebSocket authentication: the session cookie (Channels' AuthMiddlewareStack) or an API token.

A token is taken from `?token=<key>` or an `Authorization: Token <key>` header (the same DRF
tokens as the REST API); when one is given it decides the user, valid or not.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


def token_from_scope(scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() in ("token", "bearer"):
                return parts[1]
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


class TokenAuthMiddleware(BaseMiddleware):
    """Runs inside AuthMiddlewareStack, so a token overrides the session user."""

    async def __call__(self, scope, receive, send):
        key = token_from_scope(scope)
        if key:
            scope = dict(scope, user=await _user_for_token(key))
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Cross-site WebSocket hijacking guard: a browser always sends `Origin`, and it must be one
    of ALLOWED_HOSTS (as with Channels' AllowedHostsOriginValidator). Non-browser clients
    (scripts with a token) send none and are let through: they cannot ride a victim's cookie."""

    def __init__(self, application):
        from django.conf import settings

        super().__init__(application, list(settings.ALLOWED_HOSTS))

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)
