"""Credentials in URLs are redacted from every log line that could carry a URL.

API tokens are refused in URLs (imageflow/ws_auth.py), but clients still send them, and the
request line is logged before anyone refuses anything: uvicorn's access log
(`uvicorn.access`), its WebSocket handshake lines (`uvicorn.error`: `"WebSocket /ws/...?token=..."`)
and Django's request loggers. A single-use ticket is harmless once used, but redacted as well,
so a log never shows a credential-shaped value to copy.

The filter rewrites the record's arguments in place, keeping their number and types, because
uvicorn's AccessFormatter unpacks `record.args` positionally.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
# `name=value` in a query string, form body or message; a name glued to a longer word (csrftoken)
# is not one of these.
_SECRET_QUERY_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9_])(token|ticket|access_token|api_key|apikey|password|secret)=[^&\s\"'#]+")

# Loggers that write request lines; uvicorn's do not propagate to the root handler, so the
# filter goes on each logger (records of their own) and on the console handler (settings.LOGGING).
REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error", "django.request", "django.server", "django.channels.server")


def redact(text: str) -> str:
    return _SECRET_QUERY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def _redact_value(value):
    return redact(value) if isinstance(value, str) else value


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        return True


def install_log_redaction() -> None:
    """Put the filter on the request loggers of this process (idempotent). Called by the ASGI
    application, after uvicorn configured its loggers, whatever log config it was given."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in logger.filters):
            logger.addFilter(RedactSecretsFilter())
