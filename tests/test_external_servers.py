"""tests.external_servers.start_or_skip: the one rule of the Postgres and Redis fixtures."""

from __future__ import annotations

import pytest

from tests.external_servers import start_or_skip


class Unavailable(Exception):
    pass


def broken() -> str:
    raise Unavailable("it would not start: port in use")


def test_a_missing_binary_skips_outside_ci_and_fails_under_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server binary"):
        start_or_skip(lambda: "never", installed=False, missing="no server binary", unavailable=Unavailable)
    monkeypatch.setenv("CI", "true")  # CI tries anyway: the start's own error fails the test
    with pytest.raises(pytest.fail.Exception, match="port in use"):
        start_or_skip(broken, installed=False, missing="no server binary", unavailable=Unavailable)


def test_an_installed_binary_starts_or_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert start_or_skip(lambda: "server", installed=True, missing="-", unavailable=Unavailable) == "server"
    with pytest.raises(pytest.fail.Exception, match="port in use"):
        start_or_skip(broken, installed=True, missing="-", unavailable=Unavailable)
