"""Process logging: ``--log-level`` and ``--log-format text|json``.

The JSON format is one object per line (``time``, ``level``, ``logger``,
``message`` and, when a call passed them with ``extra=``, ``cluster``,
``source`` and ``reason``), so a log shipper needs no parsing rules. An
unknown level is a usage error rather than a silent INFO: an operator who
typed ``--log-level debgu`` would otherwise wonder where the debug lines went.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Literal, TextIO

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "EXTRA_FIELDS", "JsonFormatter", "parse_level", "configure"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Structured fields a log call may attach with ``extra={...}``; copied when present.
EXTRA_FIELDS = ("cluster", "source", "reason")
_HANDLER_NAME = "syncmesh-cli"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_level(name: str) -> int:
    """``"info"`` -> ``logging.INFO``; anything else raises ``ValueError``."""
    upper = name.strip().upper()
    if upper == "WARN":
        upper = "WARNING"
    if upper not in LOG_LEVELS:
        raise ValueError(f"unknown log level {name!r} (one of {', '.join(LOG_LEVELS)})")
    return int(getattr(logging, upper))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            # UTC with milliseconds: sortable and unambiguous across hosts.
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one that writes ``fmt`` at ``level``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of {', '.join(LOG_FORMATS)})")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    # Marked, so a second call (tests calling ``main`` in-process) replaces only our own
    # handler and leaves the ones others installed (pytest's capture) alone.
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
