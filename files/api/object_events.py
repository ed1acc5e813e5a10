"""`POST /api/v1/object-events/`: S3 event notifications from the object store (MinIO's webhook
target, AWS through SNS), authenticated by the shared OBJECT_EVENTS_TOKEN, not by a user
(files/object_events.py; docs/automation.md#object-store-events)."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from files.object_events import object_events_token_valid, object_records, object_register
from imageflow.api.parsers import DepthLimitedJSONParser
from imageflow.api.schema import ERROR_RESPONSES


class SnsJSONParser(DepthLimitedJSONParser):
    """AWS SNS posts its JSON envelope as text/plain."""

    media_type = "text/plain"


class ObjectEventResultSerializer(serializers.Serializer):
    key = serializers.CharField()
    outcome = serializers.CharField(help_text="registered, already registered, or why it was skipped")
    file = serializers.UUIDField(allow_null=True)


class ObjectEventsAnswerSerializer(serializers.Serializer):
    records = ObjectEventResultSerializer(many=True)


class ObjectEventsView(APIView):
    authentication_classes: list = []  # the shared token is the credential (checked below)
    permission_classes = [AllowAny]
    parser_classes = [DepthLimitedJSONParser, SnsJSONParser]  # MinIO sends JSON, SNS JSON as text/plain

    @extend_schema(
        request={"application/json": {"type": "object", "description": "An S3 event notification (MinIO or "
                                                                        "AWS), or an SNS envelope of one."}},
        responses={200: OpenApiResponse(ObjectEventsAnswerSerializer), **ERROR_RESPONSES(400, 401, 404)},
        summary="S3 event notifications: created objects become files (and fire triggers)",
        auth=[], tags=["files"],
    )
    def get_authenticate_header(self, request) -> str:
        return 'Bearer realm="object-events"'  # so a missing or wrong token is a 401, not a 403

    def post(self, request):
        if not settings.OBJECT_EVENTS_TOKEN:
            raise Http404("Object-store events are off (OBJECT_EVENTS_TOKEN is empty).")
        if not object_events_token_valid(request.headers.get("Authorization")):
            raise NotAuthenticated("Send Authorization: Bearer <OBJECT_EVENTS_TOKEN>.")
        results = []
        for record in object_records(request.data):
            file, outcome = object_register(record)
            results.append({"key": record.key, "outcome": outcome, "file": file.pk if file else None})
        return Response({"records": results})
