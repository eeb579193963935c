"""What every command shares: exit codes, the data directory, output as text or JSON.

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 5 rejected input. Errors go to stderr, as
``{"error": {"code": N, "kind": ..., "message": ...}}`` under ``--json``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from ..errors import CrdtSyncError, ValueRejected
from ..values import from_json, loads_json, to_json

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REJECTED = 0, 1, 2, 3, 5
ENV_DATA = "CRDT_SYNC_DATA"


class UsageError(CrdtSyncError):
    """The command line itself is wrong."""


def data_dir(explicit: str | None) -> Path:
    """``--data``, else ``$CRDT_SYNC_DATA``, else the user data directory."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_DATA):
        return Path(os.environ[ENV_DATA])
    from platformdirs import user_data_dir

    return Path(user_data_dir("crdt-sync", appauthor=False))


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value``: a value that parses as JSON is JSON (bytes as {"$bytes": base64}), else a str."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise UsageError(f"expected key=value, got {text!r}")
    try:
        value = from_json(loads_json(raw))
    except ValueRejected as exc:  # JSON, but not a value the CRDT can hold
        raise ValueRejected(f"field {key!r}: {exc}") from None
    except (ValueError, TypeError):  # not JSON (or bad base64 in {"$bytes": ...}): a str
        value = raw
    return key, value


_NONE = object()  # (stream_list: an empty iterable)


class Output:
    """Prints results as JSON (``--json``) or for people (rich)."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        from rich.console import Console

        self.console = Console(soft_wrap=True)
        self.err = Console(stderr=True, soft_wrap=True)

    def emit(self, data: Any, human: Callable[[], None] | None = None) -> None:
        if self.json:
            print(json.dumps(to_json(data), ensure_ascii=False, sort_keys=False, allow_nan=False))
        elif human is not None:
            human()
        else:
            self.console.print_json(json.dumps(to_json(data), ensure_ascii=False, allow_nan=False))

    def stream_list(self, items: Iterable[Any]) -> None:
        """``--json``: a JSON array printed item by item (the same text :meth:`emit` prints
        for the whole list), so that memory stays flat in its length."""
        write = sys.stdout.write
        rest = iter(items)
        first = next(rest, _NONE)  # before "[": a refused argument is an error, not half an array
        write("[")
        if first is not _NONE:
            write(json.dumps(to_json(first), ensure_ascii=False, allow_nan=False))
            for item in rest:
                write(", " + json.dumps(to_json(item), ensure_ascii=False, allow_nan=False))
        write("]\n")
        sys.stdout.flush()

    def table(self, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell if isinstance(cell, str) else show(cell) for cell in row))
        self.console.print(table)

    def warn(self, kind: str, message: str) -> None:
        """A warning on stderr (the command goes on): ``{"warning": {...}}`` under ``--json``."""
        if self.json:
            print(json.dumps({"warning": {"kind": kind, "message": message}}), file=sys.stderr)
        else:
            self.err.print(f"[bold yellow]warning:[/] {message}", markup=True, highlight=False)

    def fail(self, code: int, kind: str, message: str,
             details: dict[str, Any] | None = None) -> NoReturn:
        """Print the error (``details`` go into the JSON error object) and exit with ``code``."""
        if self.json:
            error = {"code": code, "kind": kind, "message": message, **(details or {})}
            print(json.dumps({"error": to_json(error)}), file=sys.stderr)
        else:
            self.err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
        raise SystemExit(code)


def space_id(replica: Any, text: str) -> str:
    """SPACE as typed on a command line: a space id, or the local name of exactly one space.

    Raises:
        NotFound: no space has that name (or id) here.
        AmbiguousSpace: several spaces have that name; the message lists their ids.
    """
    return str(replica.space_id(text))


def show(value: Any) -> str:
    return json.dumps(to_json(value), ensure_ascii=False, allow_nan=False)


def short(device: str) -> str:
    return device[:12]
