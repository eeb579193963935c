"""Structured logs: one line per event, as ``key=value`` text or as JSON (``--log-format json``).

Callers log an event name as the message and its fields as ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", {}) or {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        if self.as_json:
            return json.dumps({"time": stamp, "level": record.levelname.lower(),
                               "event": record.getMessage(), **fields}, default=str)
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{stamp} {record.levelname.lower():<7} {record.getMessage()} {tail}".rstrip()


def setup_logging(fmt: str, level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt == "json"))
    root = logging.getLogger("crdt_sync")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
