"""Starting the server binaries some tests need (Postgres, Redis): one rule for all of them.

Without the binary a test skips, except under CI (``CI`` set), where it fails: CI installs
them (``.ci/system-deps``), so a missing one there is a broken set-up, not a reason to skip.
A binary that is there but cannot start fails the test with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import pytest

Server = TypeVar("Server")


def start_or_skip(start: Callable[[], Server], *, installed: bool, missing: str,
                  unavailable: type[Exception]) -> Server:
    """``start()``, or skip with ``missing`` when not ``installed`` (outside CI); fails the
    test with the message of ``unavailable`` if starting raises it."""
    if not installed and not os.environ.get("CI"):
        pytest.skip(missing)
    try:
        return start()
    except unavailable as exc:
        pytest.fail(str(exc))
