"""crdt_sync._pycrdt_compat: the version check, the probe of pycrdt's internals, and both
document handles (the internals and the public-API fallback) doing the same thing."""

from __future__ import annotations

from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt_sync import Replica, _pycrdt_compat
from crdt_sync._pycrdt_compat import FastDocHandle, PublicDocHandle, doc_handle
from tests.helpers import share


def test_the_installed_pycrdt_checks_out() -> None:
    # The pinned range in pyproject.toml is the range the module was written against: on a
    # supported install the fast path is in use (else a test elsewhere would silently
    # measure the fallback).
    assert _pycrdt_compat.FALLBACK_REASON is None
    assert _pycrdt_compat.INTERNALS
    assert isinstance(doc_handle(Doc()), FastDocHandle)


def test_a_version_outside_the_checked_range_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pycrdt_compat, "version", lambda name: "0.99.1")
    reason = _pycrdt_compat._probe()
    assert reason is not None and "0.99.1 is outside the range" in reason


def test_changed_internals_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pycrdt whose Text no longer has the binding where we expect it: the probe says so
    # instead of a TypeError or AttributeError at the first keystroke.
    monkeypatch.setattr(FastDocHandle, "text_binding", staticmethod(lambda text: object()))
    reason = _pycrdt_compat._probe()
    assert reason is not None and reason.startswith("pycrdt's internals differ: AttributeError")


def test_a_changed_signature_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def insert_with_a_new_signature(self: FastDocHandle, bound: Any, index: int, text: str) -> None:
        bound.insert(self.txn, index, text, None, "an argument this binding does not take")

    monkeypatch.setattr(FastDocHandle, "insert_text", insert_with_a_new_signature)
    reason = _pycrdt_compat._probe()
    assert reason is not None and reason.startswith("pycrdt's internals differ: TypeError")


@pytest.mark.parametrize("handle_type", [FastDocHandle, PublicDocHandle])
def test_both_handles_write_observe_and_commit_alike(handle_type: type) -> None:
    doc: Doc[Any] = Doc(client_id=7)
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    handle = handle_type(doc)
    unsubscribe = handle.observe(lambda event: updates.append(event.update))
    bound = handle.text_binding(text)
    handle.begin()
    assert handle.open
    with pytest.raises(RuntimeError, match="already has an open transaction"):
        handle.begin()
    handle.insert_text(bound, 0, "hello world")
    handle.remove_text(bound, 5, 6)
    assert str(text) == "hello"  # a read inside the transaction sees it
    handle.commit()
    assert not handle.open
    assert len(updates) == 1  # one transaction, one update
    unsubscribe()
    handle.begin()
    handle.insert_text(bound, 5, "!")
    handle.commit()
    assert len(updates) == 1  # unsubscribed
    replay: Doc[Any] = Doc()
    replay.apply_update(updates[0])
    assert str(replay.get("t", type=Text)) == "hello"


@pytest.mark.parametrize("handle_type", [FastDocHandle, PublicDocHandle])
def test_an_observer_error_leaves_the_commit_as_itself(handle_type: type) -> None:
    # A failed journal write raises in the observer; the caller must see that error (the
    # public API gathers observer errors into an ExceptionGroup: the handle unwraps it).
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    handle = handle_type(doc)

    def full_disk(event: Any) -> None:
        raise OSError(28, "No space left on device")

    handle.observe(full_disk)
    handle.begin()
    handle.insert_text(handle.text_binding(text), 0, "x")
    with pytest.raises(OSError, match="No space left"):
        handle.commit()
    assert not handle.open
    handle.begin()  # and the document takes the next transaction
    handle.commit()


def test_replicas_on_both_paths_converge(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device on the fallback and one on the fast path edit the same text and fields and
    exchange bundles: the same bytes of history mean the same state on both."""
    monkeypatch.setattr(_pycrdt_compat, "INTERNALS", False)
    slow = Replica(tmp_path / "slow")
    monkeypatch.setattr(_pycrdt_compat, "INTERNALS", True)
    fast = Replica(tmp_path / "fast")
    share(slow, fast, name="s")
    for replica, word in ((slow, "slow"), (fast, "fast")):
        space = replica.space("s")
        for i in range(20):
            with space.transaction() as tx:
                body = tx.entity("docs", "d").text("body")
                body.insert(0, f"{word}{i} ")
                if i % 3 == 0:
                    body.delete(0, 2)
        space.put("docs", "d", {word: True})
    fast.import_bundle(slow.export_bundle("s"))
    slow.import_bundle(fast.export_bundle("s"))
    assert slow.space("s").get("docs", "d") == fast.space("s").get("docs", "d")
    assert {"slow", "fast"} <= set(fast.space("s").get("docs", "d"))
    slow.close()
    fast.close()
