from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from . import rate_limit
from .models import ApiToken, User
from .services import api_token_revoke


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "date_joined")
    readonly_fields = ("id", "date_joined", "last_login")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """List and revoke; tokens are created through the API (POST /api/v1/tokens/), the only place
    the secret is shown. The row holds no secret to show, only its hash, which is left out too."""

    list_display = ("name", "prefix", "user", "scope_list", "organization", "created_at", "expires_at",
                    "last_used_at", "revoked_at", "requests_this_window")
    list_filter = ("revoked_at", "scopes")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user", "organization")
    fields = ("name", "prefix", "user", "scopes", "organization", "created_at", "expires_at", "last_used_at",
              "revoked_at", "requests_this_window")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        # Nothing on the page is editable: a change is the revoke action only.
        return False

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes)

    @admin.display(description="requests this window")
    def requests_this_window(self, token: ApiToken):
        count = rate_limit.usage([token]).get(token.pk)
        rate = rate_limit.configured_rate()
        if rate is None:
            return "no limit"
        return "unknown (Redis unavailable)" if count is None else f"{count} / {rate.requests}"

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        tokens = list(queryset.filter(revoked_at__isnull=True))
        for token in tokens:
            api_token_revoke(token=token)
        self.message_user(request, f"Revoked {len(tokens)} token(s).", messages.SUCCESS)
