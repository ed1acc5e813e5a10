"""API token authentication, the same for DRF views, the event stream and the WebSocket.

Two kinds of token are accepted in `Authorization: Token <key>` (or `Bearer <key>`):

- a scoped token (`ifk_...`, ApiToken): found by the SHA-256 of the key; expired, revoked or
  belonging to an inactive user is a 401. Its scopes are checked against the request here, at the
  one place every DRF view takes a scoped token in (views set their own permission_classes, so a
  default permission class would not reach them; they all keep the default authenticators);
- the legacy single token (rest_framework.authtoken): full scope, as before.

The user an authenticated request gets carries `api_token`: the ApiToken, or None for the legacy
token and the session. imageflow/api/ownership.py reads it to hold an organization-limited token
to that organization's rows.
"""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from .models import ApiToken, User
from .scopes import missing_scope_message, required_scope
from .services import API_TOKEN_MARK, api_token_hash, api_token_touch

KEYWORDS = ("token", "bearer")


class TokenRejected(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def api_key_user(key: str, *, touch: bool = True) -> tuple[User, ApiToken | Token]:
    """The active user `key` authenticates (with `api_token` set) and the token it is;
    TokenRejected says why not."""
    if key.startswith(API_TOKEN_MARK):
        token = ApiToken.objects.select_related("user").filter(key_hash=api_token_hash(key)).first()
        if token is None:
            raise TokenRejected("Invalid token.")
        user = _valid_token_user(token)
        if touch:
            api_token_touch(token=token)
        return user, token
    legacy = Token.objects.select_related("user").filter(key=key).first()
    if legacy is None:
        raise TokenRejected("Invalid token.")
    if not legacy.user.is_active:
        raise TokenRejected("User inactive or deleted.")
    legacy.user.api_token = None
    return legacy.user, legacy


def _valid_token_user(token: ApiToken) -> User:
    if token.revoked_at is not None:
        raise TokenRejected("Token revoked.")
    if token.expires_at is not None and token.expires_at <= timezone.now():
        raise TokenRejected("Token expired.")
    if not token.user.is_active:
        raise TokenRejected("User inactive or deleted.")
    user = token.user
    user.api_token = token
    return user


def api_token_user(*, token_pk) -> User | None:
    """The user of a still valid scoped token (a WebSocket ticket issued to it), or None."""
    token = ApiToken.objects.select_related("user").filter(pk=token_pk).first()
    try:
        return _valid_token_user(token) if token is not None else None
    except TokenRejected:
        return None


def token_scopes(user) -> list[str] | None:
    """The scopes the request's credential holds; None: all (session, legacy token)."""
    token = getattr(user, "api_token", None)
    return list(token.scopes) if token is not None else None


def has_scope(user, scope: str) -> bool:
    scopes = token_scopes(user)
    return scopes is None or scope in scopes


def key_from_header(value: bytes | str | None) -> str | None:
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    parts = value.split()
    if len(parts) == 2 and parts[0].lower() in KEYWORDS:
        return parts[1]
    return None


class ApiTokenAuthentication(BaseAuthentication):
    """DRF's authenticator for both kinds of token (in DEFAULT_AUTHENTICATION_CLASSES)."""

    keyword = "Token"

    def authenticate(self, request):
        header = get_authorization_header(request)
        if not header:
            return None
        parts = header.split()
        if not parts or parts[0].decode("latin-1").lower() not in KEYWORDS:
            return None  # another scheme: another authenticator's business
        key = key_from_header(header)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid token header: `Token <key>`.")
        try:
            user, token = api_key_user(key)
        except TokenRejected as exc:
            raise exceptions.AuthenticationFailed(exc.detail) from None
        if isinstance(token, ApiToken):
            match = getattr(request, "resolver_match", None)
            needed = required_scope(method=request.method, url_name=match.url_name if match else None)
            if needed not in token.scopes:
                raise exceptions.PermissionDenied(missing_scope_message(needed=needed, scopes=token.scopes),
                                                  code="missing_scope")
        return user, token

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """The schema's name for it stays `tokenAuth`, as with DRF's TokenAuthentication before."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <key>`: a scoped token (`ifk_...`) or the legacy token."}
