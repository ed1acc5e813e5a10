"""Pagination of list endpoints.

- `StandardPagination`: page numbers (`?page=2&page_size=20`) for small, mostly-static lists.
- `KeysetPagination`: an opaque cursor over a strict (created_at, id) order for large,
  append-heavy tables (executions). A page is `WHERE created_at <= t AND (created_at < t OR
  id < x) ORDER BY created_at DESC, id DESC LIMIT n+1`, an index seek, so its cost does not
  grow with how deep it is.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime
from urllib.parse import urlencode

from django.db.models import Q
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.response import Response

MAX_PAGE_SIZE = 200


class StandardPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE


class KeysetPagination(BasePagination):
    """Newest first by (`time_field`, id). `?cursor=` from a previous page's `next`."""

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    page_size = 50
    max_page_size = MAX_PAGE_SIZE
    time_field = "created_at"

    def __init__(self) -> None:
        self.next_cursor: str | None = None
        self.request = None

    # --- cursor encoding ------------------------------------------------------------------
    @staticmethod
    def encode_cursor(*, time_value: datetime, row_id) -> str:
        raw = json.dumps([time_value.isoformat(), str(row_id)], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @staticmethod
    def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            time_text, id_text = json.loads(base64.urlsafe_b64decode(padded.encode()))
            when = datetime.fromisoformat(time_text)
            if when.tzinfo is None:
                raise ValueError("naive time")
            return when.astimezone(UTC), uuid.UUID(id_text)
        except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError, UnicodeDecodeError):
            raise ValidationError({"cursor": ["Invalid cursor."]}) from None

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            raise ValidationError({self.page_size_query_param: ["A whole number is required."]}) from None
        if size < 1:
            raise ValidationError({self.page_size_query_param: ["Must be at least 1."]})
        return min(size, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        size = self.get_page_size(request)
        cursor = request.query_params.get(self.cursor_query_param)
        field = self.time_field
        queryset = queryset.order_by(f"-{field}", "-id")
        if cursor:
            when, row_id = self.decode_cursor(cursor)
            # (time, id) < cursor, written so `time <= t` is an index condition: PostgreSQL seeks
            # the (..., time, id) index to the cursor instead of walking every earlier row.
            queryset = queryset.filter(Q(**{f"{field}__lte": when}),
                                       Q(**{f"{field}__lt": when}) | Q(id__lt=row_id))
        rows = list(queryset[: size + 1])
        has_more = len(rows) > size
        rows = rows[:size]
        self.next_cursor = (
            self.encode_cursor(time_value=getattr(rows[-1], field), row_id=rows[-1].pk) if has_more and rows else None
        )
        return rows

    def _next_link(self) -> str | None:
        if self.next_cursor is None:
            return None
        params = self.request.query_params.copy()
        params[self.cursor_query_param] = self.next_cursor
        return self.request.build_absolute_uri(self.request.path) + "?" + urlencode(params, doseq=True)

    def get_paginated_response(self, data):
        return Response({"next": self._next_link(), "next_cursor": self.next_cursor, "results": data})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next", "next_cursor"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "next_cursor": {"type": "string", "nullable": True},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view):
        return [
            {"name": self.cursor_query_param, "required": False, "in": "query",
             "description": "The `next_cursor` of the previous page.", "schema": {"type": "string"}},
            {"name": self.page_size_query_param, "required": False, "in": "query",
             "description": f"Rows per page (1-{self.max_page_size}).",
             "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size}},
        ]
