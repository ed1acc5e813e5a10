"""OpenAPI pieces shared by every view: the error body and the responses that carry it."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Machine-readable code, e.g. validation_error, not_found.")
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),
                                   help_text="Per-field messages; keys are dotted field paths.")


_DESCRIPTIONS = {
    400: "Invalid input (per-field messages in `errors`).",
    401: "Not authenticated.",
    403: "Not allowed.",
    404: "Not found (also for rows of other users).",
    409: "Conflict with the current state.",
    413: "Upload larger than allowed.",
    415: "Unsupported media type.",
    429: "Too many requests for this token (Retry-After says when to try again).",
}


def ERROR_RESPONSES(*codes: int) -> dict[int, OpenApiResponse]:  # noqa: N802 - reads like a constant
    return {code: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS.get(code, "Error.")) for code in codes}


def error_postprocessing_hook(result, generator, request, public):
    """Every operation may answer 401/404/405/500 in the error shape; document it once here."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    if "Error" not in components:
        components["Error"] = {
            "type": "object",
            "required": ["type", "title", "status", "detail", "errors"],
            "properties": {
                "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
            },
        }
    ref = {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            codes = ["400", "404", "405", "406", "415", "500"]
            if operation.get("security") != [] and {} not in (operation.get("security") or [{}]):
                # 403: a scoped token without the scope the operation needs; 429: the token's rate
                # limit, with Retry-After (docs/security.md#api-tokens-scopes-and-the-rate-limit).
                codes.extend(["401", "403", "429"])
            for code in codes:
                responses.setdefault(code, ref)
    return result
