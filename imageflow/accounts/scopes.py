"""Which scope a request needs: the one rule, for every API endpoint (docs/security.md#scopes).

Keyed by the URL's name (`request.resolver_match.url_name`: `execution-cancel`, `pipeline-run`),
which plain APIViews and viewset routes both have, so a new endpoint gets a scope without
declaring anything: read when it only reads, write when it writes. Only the exceptions are listed
here, and tests/accounts/test_scope_map.py walks the URL configuration so that every endpoint is
seen to map to one.
"""

from __future__ import annotations

from .models import TokenScope

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Writes that start, stop or repeat work on existing rows rather than changing definitions.
RUN_URL_NAMES = frozenset({
    "pipeline-run", "workflow-apply", "execution-cancel", "execution-retry", "webhook-delivery-redeliver",
})
# Unsafe methods that change nothing a token could abuse: a search with a body; a single-use ticket
# for a read-only event connection; revoking the very token presented (it can only lose access).
READ_URL_NAMES = frozenset({"workflow-similar-to", "ws-ticket", "token"})
# Writes on who may do what: organizations and their memberships, and API tokens (a token that
# may create tokens could mint itself wider scopes, so only an admin-scoped one may).
ADMIN_URL_PREFIXES = ("organization", "membership", "api-token")


def required_scope(*, method: str, url_name: str | None) -> str:
    if method.upper() in SAFE_METHODS:
        return TokenScope.READ
    name = url_name or ""
    if name in READ_URL_NAMES:
        return TokenScope.READ
    if name in RUN_URL_NAMES:
        return TokenScope.RUN
    if name.startswith(ADMIN_URL_PREFIXES):
        return TokenScope.ADMIN
    return TokenScope.WRITE


def missing_scope_message(*, needed: str, scopes: list[str]) -> str:
    return f"This token lacks the '{needed}' scope needed here (it has: {', '.join(scopes)})."
