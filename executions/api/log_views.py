"""Execution logs over HTTP: one run's records and full-text search across runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlencode

from django.shortcuts import get_object_or_404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from executions.logs import LEVELS
from executions.logstore import queries
from executions.logstore.shipping import SearchUnavailable
from executions.models import PipelineExecution
from imageflow.api.ownership import can_see_all, scope_to_user
from imageflow.api.schema import ERROR_RESPONSES

MAX_PAGE_SIZE = 1000
PUBLIC_FIELDS = ("id", "timestamp", "level", "message", "execution_id", "pipeline_id", "pipeline_name", "step_id",
                 "node_id", "component", "extra", "highlight")


class SearchServiceUnavailable(APIException):
    status_code = 503
    default_detail = "The log search server is unavailable; records are kept and will be searchable when it returns."
    default_code = "search_unavailable"


def _list_param(request, name: str) -> list[str]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return values


def _levels(request) -> list[str]:
    levels = [level.lower() for level in _list_param(request, "level")]
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise ValidationError({"level": [f"Unknown level(s) {', '.join(unknown)}; use {', '.join(LEVELS)}."]})
    return levels


def _uuids(request, name: str) -> list[str]:
    values = _list_param(request, name)
    try:
        return [str(uuid.UUID(value)) for value in values]
    except ValueError:
        raise ValidationError({name: ["Must be one or more UUIDs, comma-separated."]}) from None


def _time(request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    value = parse_datetime(raw.replace(" ", "+"))
    if value is None or value.tzinfo is None:
        raise ValidationError({name: ["Must be an ISO 8601 date-time with a time zone, e.g. 2026-11-26T12:00:00Z."]})
    return value


def _page_size(request, default: int) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return default
    try:
        size = int(raw)
    except ValueError:
        raise ValidationError({"page_size": ["A whole number is required."]}) from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValidationError({"page_size": [f"Must be between 1 and {MAX_PAGE_SIZE}."]})
    return size


def _cursor(request) -> str | None:
    cursor = request.query_params.get("cursor") or None
    if cursor:
        try:
            queries.decode_cursor(cursor)
        except queries.InvalidCursor:
            raise ValidationError({"cursor": ["Invalid cursor."]}) from None
    return cursor


def _body(request, page: queries.LogPage, source: str) -> dict:
    next_link = None
    if page.next_cursor:
        params = request.query_params.copy()
        params["cursor"] = page.next_cursor
        next_link = request.build_absolute_uri(request.path) + "?" + urlencode(params, doseq=True)
    # `highlight` only on search results; `owner_id` never leaves the server.
    results = [{key: record.get(key) for key in PUBLIC_FIELDS if key != "highlight" or key in record}
               for record in page.records]
    return {"count": page.total, "next": next_link, "next_cursor": page.next_cursor, "source": source,
            "results": results}


CURSOR = OpenApiParameter("cursor", str, description="The `next_cursor` of the previous page (search_after).")
PAGE_SIZE = OpenApiParameter("page_size", int, description=f"Records per page (1-{MAX_PAGE_SIZE}).")
LEVEL = OpenApiParameter("level", str, description=f"One or more of {', '.join(LEVELS)}, comma-separated.")
NODE = OpenApiParameter("node", str, description="One or more DAG node ids, comma-separated.")


class ExecutionLogsView(APIView):
    """`GET /api/v1/executions/<id>/logs/`: a run's records in the order they were written."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[NODE, LEVEL, CURSOR, PAGE_SIZE], responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES(400, 404)},
                   summary="A run's log records, oldest first (search_after pagination)", tags=["logs"])
    def get(self, request, pk):
        execution = get_object_or_404(scope_to_user(PipelineExecution.objects.all(), user=request.user), pk=pk)
        options = {"execution_id": execution.pk, "nodes": _list_param(request, "node"), "levels": _levels(request),
                   "cursor": _cursor(request), "size": _page_size(request, 100)}
        try:
            page, source = queries.execution_logs(**options), "search"
        except SearchUnavailable:
            # The durable buffer holds every record: serve the page from it.
            page, source = queries.execution_logs_from_database(**options), "database"
        return Response(_body(request, page, source))


class LogSearchView(APIView):
    """`GET /api/v1/logs/?q=...`: full-text search across runs, newest first, highlighted."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description='Words (all must match), "quoted phrases", -excluded, prefix*.'),
            LEVEL, NODE,
            OpenApiParameter("pipeline", str, description="Pipeline UUID(s), comma-separated."),
            OpenApiParameter("execution", str, description="Execution UUID(s), comma-separated."),
            OpenApiParameter("component", str, description="Component name(s), comma-separated."),
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="Records at or after this time."),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="Records before this time."),
            CURSOR, PAGE_SIZE,
        ],
        responses={200: OpenApiTypes.OBJECT, **ERROR_RESPONSES(400)},
        summary="Search log records across runs", tags=["logs"],
    )
    def get(self, request):
        since, until = _time(request, "since"), _time(request, "until")
        if since and until and since >= until:
            raise ValidationError({"until": ["Must be later than `since`."]})
        text = request.query_params.get("q", "")
        if len(text) > 1000:
            raise ValidationError({"q": ["At most 1000 characters."]})
        try:
            page = queries.search_logs(
                text=text, owner_id=None if can_see_all(request.user) else request.user.pk,
                levels=_levels(request), pipelines=_uuids(request, "pipeline"), executions=_uuids(request, "execution"),
                nodes=_list_param(request, "node"), components=_list_param(request, "component"),
                since=since, until=until, cursor=_cursor(request), size=_page_size(request, 50),
            )
        except SearchUnavailable:
            raise SearchServiceUnavailable() from None
        except ValueError as exc:
            raise ValidationError({"q": [str(exc)]}) from None
        return Response(_body(request, page, "search"))
