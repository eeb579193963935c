"""The relay's storage: envelopes only, in SQLite, with group commit.

The relay never opens a payload and keeps no document in memory: it verifies signatures and
chains, stores envelopes, and serves what each device lacks straight from SQLite. Every
envelope is committed with fsync before it is acknowledged; sessions that receive at the
same time share one commit (group commit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from crdt_sync.envelope import Envelope, open_envelope
from crdt_sync.errors import Rejected
from crdt_sync.identity import Identity
from crdt_sync.protocol.messages import E_LIMIT, ProtocolViolation
from crdt_sync.store import Store

RELAY_DB = "relay"  # the relay's own store lives in DIR/relay/


class RelayStore:
    """One SQLite store shared by every session of the relay process.

    Writes go into one open transaction that :meth:`commit` ends (with fsync): sessions
    await :meth:`commit` before sending anything, so a commit covers every session that
    wrote meanwhile.

    Args:
        directory: the relay's data directory.
        commit_delay: how long the first writer waits for others to join its commit.
    """

    def __init__(self, directory: Path, commit_delay: float = 0.002) -> None:
        self.directory = directory / RELAY_DB
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.directory, fsync=True)
        with self.store.write():
            seed = self.store.meta("device_seed")
            if seed is None:
                seed = Identity.generate().seed
                self.store.set_meta("device_seed", seed)
        self.identity = Identity(bytes(seed))
        self.commit_delay = commit_delay
        self._commit: asyncio.Future[None] | None = None
        self._written: set[str] = set()
        #: called after each commit with the spaces that got new envelopes (fan-out)
        self.on_commit: Callable[[set[str], float], None] = lambda spaces, at: None
        self.commits = 0

    # -- group commit ----------------------------------------------------------------------
    def begin(self) -> None:
        if not self.store.db.in_transaction:
            self.store.db.execute("BEGIN IMMEDIATE")

    @property
    def dirty(self) -> bool:
        return self.store.db.in_transaction

    async def commit(self) -> None:
        """Return once everything written so far is committed (fsync'd)."""
        if not self.store.db.in_transaction:
            return
        if self._commit is None:
            loop = asyncio.get_running_loop()
            self._commit = loop.create_future()
            loop.call_later(self.commit_delay, self._do_commit)
        await asyncio.shield(self._commit)

    def _do_commit(self) -> None:
        future, self._commit = self._commit, None
        written, self._written = self._written, set()
        assert future is not None
        try:
            if self.store.db.in_transaction:
                self.store.db.execute("COMMIT")
                self.commits += 1
        except Exception as exc:  # the disk failed: nobody may ACK what was not stored
            self.store.db.execute("ROLLBACK")
            future.set_exception(exc)
            return
        future.set_result(None)
        if written:
            self.on_commit(written, time.monotonic())

    def close(self) -> None:
        if self.store.db.in_transaction:
            self.store.db.execute("COMMIT")
        self.store.close()

    # -- reads -----------------------------------------------------------------------------
    def version_vector(self, space: str) -> dict[str, int]:
        return self.store.version_vector(space)

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        return self.store.missing_envelopes(space, covered, max_count, max_bytes)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self.store.envelope_hash(space, author, seq)

    def spaces(self) -> list[str]:
        return self.store.spaces(joined_only=False)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.glob("store.sqlite3*"))

    def healthy(self) -> bool:
        try:
            self.store.db.execute("SELECT 1 FROM meta LIMIT 1").fetchone()
        except Exception:  # any failure means storage is not reachable
            return False
        return True

    # -- writes (inside the open group transaction) ----------------------------------------
    def receive(self, envelopes: list[bytes], space: str | None, tolerate_gaps: bool) -> tuple[int, int, int]:
        """Verify (signature, chain) and store; the payloads stay unread.

        Raises:
            Rejected: the first envelope that fails; nothing of this call is kept.
        """
        verified = []
        for wire in envelopes:
            env = open_envelope(wire)
            if space is not None and env.space != space:
                raise Rejected("wrong-space", f"envelope of {env.space!r} sent as {space!r}")
            verified.append(env)
        self.begin()
        self.store.db.execute("SAVEPOINT receive")
        applied = dups = gaps = 0
        try:
            for env in verified:
                status = self.store.check_chain(env, tolerate_gaps)
                if status == "new":
                    self.store.insert_envelope(env)
                    self.store.join(env.space)
                    self._written.add(env.space)
                    applied += 1
                else:
                    dups += status == "duplicate"
                    gaps += status == "gap"
        except BaseException:
            self.store.db.execute("ROLLBACK TO receive")
            self.store.db.execute("RELEASE receive")
            raise
        self.store.db.execute("RELEASE receive")
        return applied, dups, gaps

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        """Not kept: a device's next HAVE says where it is, and writing every ACK would
        cost the relay a commit per frame."""

    def record_rejection(self, source: str, rejected: Rejected) -> None:
        self.begin()  # joins the group commit: Store.write() nests in the open transaction
        self.store.record_rejection(source, rejected)


class RelayHost:
    """One session's view of the relay (a :class:`~crdt_sync.protocol.SyncHost`)."""

    keeps_all_spaces = True

    def __init__(self, relay: RelayStore, admit: Callable[[str], str | None],
                 limit: Callable[[str, int, int], str | None]) -> None:
        """``admit(device)`` and ``limit(device, envelopes, bytes)`` return a refusal or None."""
        self.relay = relay
        self.identity = relay.identity
        self.device_id = relay.identity.id
        self.peer: str | None = None
        self._admit = admit
        self._limit = limit

    def admit(self, peer: str) -> str | None:
        self.peer = peer
        return self._admit(peer)

    def sync_spaces(self) -> list[str]:
        return []  # a relay takes the spaces each device names

    def version_vector(self, space: str) -> dict[str, int]:
        return self.relay.version_vector(space)

    def missing_envelopes(self, space: str, covered: dict[str, int], max_count: int,
                          max_bytes: int) -> list[Envelope]:
        return self.relay.missing_envelopes(space, covered, max_count, max_bytes)

    def envelope_hash(self, space: str, author: str, seq: int) -> bytes | None:
        return self.relay.envelope_hash(space, author, seq)

    def receive(self, envelopes: list[bytes], source: str, space: str | None = None,
                tolerate_gaps: bool = False) -> tuple[int, int, int]:
        refused = self._limit(self.peer or "?", len(envelopes), sum(map(len, envelopes)))
        if refused is not None:
            raise ProtocolViolation(E_LIMIT, refused)
        try:
            return self.relay.receive(envelopes, space, tolerate_gaps)
        except Rejected as rejected:
            self.relay.record_rejection(source, rejected)
            raise

    def record_ack(self, peer: str, space: str, vv: dict[str, int]) -> None:
        self.relay.record_ack(peer, space, vv)  # (a no-op: see RelayStore.record_ack)
