"""The API's JSON parser: DRF's, with a nesting limit checked before the document is decoded.

Python's json decoder recurses once per level, so a body of a few thousand `[` ends in a
RecursionError (a 500), and even a document it can decode would make every recursive walker
after it (serializers, error flattening, DAG checks) a risk. `json_depth_exceeds` measures the
depth without recursing and with C-speed string operations only, so a 4 MiB hostile body costs
milliseconds; a body nested deeper than API_JSON_MAX_DEPTH is a 400 before `json.loads` runs.
"""

from __future__ import annotations

import codecs
import re

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TO_SQUARE = str.maketrans("{}", "[]")


class JSONTooDeep(exceptions.ParseError):
    default_detail = "JSON nested too deeply."
    default_code = "json_too_deep"


def json_depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets in `text` (outside strings) nest deeper than `limit`.

    Escapes go first (so every remaining `"` delimits a string and the string pattern cannot
    backtrack), then strings, then everything but brackets. Each pass of removing `[]` pairs
    takes away exactly the innermost level, so `limit` passes that leave brackets behind mean
    deeper than `limit`. A pass that removes nothing means unbalanced brackets: malformed JSON,
    which the decoder reports (its own recursion error is also caught, see the parser)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text))).translate(_TO_SQUARE)
    for _ in range(limit):
        reduced = brackets.replace("[]", "")
        if not reduced or reduced == brackets:
            return False
        brackets = reduced
    return "[]" in brackets


class DepthLimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.API_JSON_MAX_DEPTH
        try:
            raw = stream.read() if stream is not None else b""
            text = codecs.decode(raw, encoding)
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if json_depth_exceeds(text, limit):
            raise JSONTooDeep(f"JSON nested deeper than {limit} levels.")
        try:
            return super().parse(_TextStream(text), media_type, {**parser_context, "encoding": "utf-8"})
        except RecursionError:
            # Unbalanced brackets the depth check let through to the decoder.
            raise JSONTooDeep(f"JSON nested deeper than {limit} levels.") from None


class _TextStream:
    """The already-read body handed back to DRF's parser (it decodes a byte stream)."""

    def __init__(self, text: str) -> None:
        self._data = text.encode("utf-8")

    def read(self, *args) -> bytes:
        data, self._data = self._data, b""
        return data
