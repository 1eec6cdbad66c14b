"""How every vidq process logs: human-readable lines (the default) or one JSON object per
line (``VIDQ_LOG_FORMAT=json``), set up once per process by ``configure_logging``: by the
CLI, and by each engine child process with the same ``LogSetup`` as its worker.

A JSON line holds ``time``, ``level``, ``logger`` and ``message``, plus the context the
code passed as ``extra`` (``request_id``, ``job_id``, ``worker``, ``user``, ...). Query
strings are cut from access-log lines: they may hold URL signatures. Tokens and inputs are
never passed to a logger in the first place.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import sys
from typing import Any, Literal

LogFormat = Literal["human", "json"]
# ``extra`` keys that a JSON line carries when a record has them.
CONTEXT_FIELDS = (
    "request_id", "job_id", "worker", "user", "attempt", "pool", "pools", "model", "retry",
    "key", "retried", "failed", "deleted", "expired",
)  # fmt: skip
_HUMAN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclasses.dataclass(frozen=True, slots=True)
class LogSetup:
    """A process's logging: its level and line format (sent to engine children as JSON)."""

    level: str = "INFO"
    format: LogFormat = "human"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        body: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                body[name] = value
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


class RedactQuery(logging.Filter):
    """Drops query strings from access-log lines: they may hold URL signatures."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def configure_logging(setup: LogSetup) -> None:
    """Send this process's log records to stderr in ``setup``'s format (replacing any
    handler set before)."""
    handler = logging.StreamHandler(sys.stderr)
    if setup.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_HUMAN))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(setup.level.upper())
    # httpx logs each request's URL at INFO: a signed URL's query is a credential.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())
