from django.db import transaction

from .models import User


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
    import secrets

    from django.conf import settings
    from django.core.cache import cache

    ticket = secrets.token_urlsafe(32)
    cache.set(WS_TICKET_PREFIX + ticket, str(user.pk), timeout=settings.WS_TICKET_TTL_SECONDS)
    return ticket


def ws_ticket_redeem(*, ticket: str) -> User | None:
    """The active user the ticket was issued to, once: of two connections racing with the same
    ticket only the one whose delete removed the key wins (Redis DEL is atomic)."""
    from django.core.cache import cache

    if not ticket or len(ticket) > 128:
        return None
    key = WS_TICKET_PREFIX + ticket
    user_pk = cache.get(key)
    if user_pk is None or not cache.delete(key):
        return None
    return User.objects.filter(pk=user_pk, is_active=True).first()
