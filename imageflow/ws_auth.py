"""WebSocket authentication: the session cookie (Channels' AuthMiddlewareStack), an API token (the
legacy one or a scoped one with the read scope, imageflow/accounts/authentication.py) in an
`Authorization: Token <key>` header, or a single-use ticket in `?ticket=<ticket>` (from
`POST /api/v1/ws-tickets/`, docs/security.md).

A long-lived API token is never taken from the URL: URLs are written to access logs, proxy logs
and browser history. A connection that puts one there (`?token=`) is refused even when it also
carries a valid cookie, so a client doing it learns at once instead of leaking quietly.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.contrib.auth.models import AnonymousUser

# Query parameters that would carry a long-lived credential: refused wherever a URL is read.
CREDENTIAL_QUERY_PARAMETERS = ("token", "access_token", "api_key")


@database_sync_to_async
def _user_for_token(key: str):
    """The legacy or a scoped token (imageflow/accounts/authentication.py); a connection only
    reads, so a scoped token needs the read scope. Anything else is anonymous (4401)."""
    from imageflow.accounts.authentication import TokenRejected, api_key_user, has_scope

    try:
        user, _ = api_key_user(key)
    except TokenRejected:
        return AnonymousUser()
    return user if has_scope(user, "read") else AnonymousUser()


@database_sync_to_async
def _user_for_ticket(ticket: str):
    from imageflow.accounts.services import ws_ticket_redeem

    return ws_ticket_redeem(ticket=ticket) or AnonymousUser()


def token_from_headers(headers) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            parts = value.decode("latin-1").split()
            if len(parts) == 2 and parts[0].lower() in ("token", "bearer"):
                return parts[1]
    return None


def credential_in_query(query: dict[str, list[str]]) -> bool:
    return any(name in query for name in CREDENTIAL_QUERY_PARAMETERS)


class TokenAuthMiddleware(BaseMiddleware):
    """Runs inside AuthMiddlewareStack: a header token or a ticket overrides the session user; a
    credential in the query string makes the connection anonymous (the consumer closes 4401)."""

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if credential_in_query(query):
            scope = dict(scope, user=AnonymousUser(), credential_in_url=True)
        elif key := token_from_headers(scope.get("headers", [])):
            scope = dict(scope, user=await _user_for_token(key))
        elif tickets := query.get("ticket"):
            scope = dict(scope, user=await _user_for_ticket(tickets[0]))
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Cross-site WebSocket hijacking guard: a browser always sends `Origin`, and it must be one
    of ALLOWED_HOSTS (as with Channels' AllowedHostsOriginValidator). Non-browser clients
    (scripts with a token header) send none and are let through: they cannot ride a victim's cookie."""

    def __init__(self, application):
        from django.conf import settings

        super().__init__(application, list(settings.ALLOWED_HOSTS))

    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)
