"""One JSON object per log line (`LOG_FORMAT=json`), for a log collector (Loki, Fluent Bit, ...).

Fields: `ts` (UTC, ISO 8601), `level`, `logger`, `message`, `request_id`, `process`, and the
structured fields a record carries (the engine's `execution_id`, `step_id`, `node_id`,
`component`, `fields`); `exc` holds a traceback. The redaction filter runs before this formatter,
so `message` is already redacted.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

# Attributes every LogRecord has; anything else was passed in `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or "-",
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
