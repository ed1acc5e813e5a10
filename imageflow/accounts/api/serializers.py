from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from imageflow.accounts.models import ApiToken, TokenScope


class TokenUsageSerializer(serializers.Serializer):
    requests = serializers.IntegerField(allow_null=True, help_text="Requests counted in the current window; "
                                        "null while the rate limit's store (Redis) is unavailable.")
    limit = serializers.IntegerField(allow_null=True, help_text="API_TOKEN_RATE_LIMIT's requests; null: no limit.")
    window_seconds = serializers.IntegerField(allow_null=True)


class ApiTokenSerializer(serializers.ModelSerializer):
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=TokenScope.choices), min_length=1,
                                   max_length=len(TokenScope.choices))
    organization = serializers.UUIDField(source="organization_id", allow_null=True, required=False,
                                         help_text="Limit the token to this organization's rows (you must be a member).")
    usage = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "scopes", "organization", "expires_at", "created_at", "last_used_at",
                  "revoked_at", "usage"]
        read_only_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at", "usage"]

    @extend_schema_field(TokenUsageSerializer)
    def get_usage(self, token: ApiToken) -> dict:
        from imageflow.accounts.rate_limit import configured_rate

        rate = configured_rate()
        counts = self.context.get("usage") or {}
        return {"requests": counts.get(token.pk), "limit": rate.requests if rate else None,
                "window_seconds": rate.window_seconds if rate else None}


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret: shown in this answer only.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
