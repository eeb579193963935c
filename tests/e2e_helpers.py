"""Tools for the end-to-end tests of issue 12 (tests/test_e2e_*.py): devices driven as
``crdt-sync`` subprocesses on their own data directories, a ``crdt-sync relay`` subprocess
that enforces membership, and what an attacker holding the relay's disk would read.

Everything is real: processes, loopback WebSockets, SQLite files. A :class:`Device` runs one
CLI command per call (``--json``) to its end, under a deadline; a relay is a
:class:`~tests.relay_helpers.RelayProcess` whose JSON log lines are collected as they come.
The keys a test needs to forge what the CLI cannot make (a stranger's write, a forged grant)
are read from the device's own key file (:class:`~crdt_sync.secrets.Secrets`), as a thief of
the device would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crdt_sync import Replica
from crdt_sync.bundle import decode_bundle
from crdt_sync.envelope import Envelope, open_envelope, seal
from crdt_sync.identity import Identity
from crdt_sync.membership import Record, decode_membership, encode_membership
from crdt_sync.relay.sqlite_store import DB_NAME
from crdt_sync.relay.storage import RELAY_DB
from crdt_sync.secrets import Secrets
from crdt_sync.space_crypto import Keyring, decrypt_payload, encrypt_payload, payload_kind
from tests.relay_envelopes import hlc_at, now_ms
from tests.relay_helpers import PROC_WAIT, RelayProcess

#: The ``crdt-sync`` entry point of the virtualenv running the tests.
CLI = str(Path(sys.executable).with_name("crdt-sync"))
#: The relay setting that turns membership enforcement off (docs/RELAY.md, "Settings"; it is
#: on by default): only the careless relay of these tests has it.
OPEN = {"CRDT_SYNC_RELAY_MEMBERSHIP": "false"}


def needs(*names: str) -> pytest.MarkDecorator:
    """Skip until the device-side API of issue 12 that a test drives is in this tree
    (``encrypted``: data payloads are sealed as kind 3; ``authorizes``: a device refuses a
    data envelope whose author is no member)."""
    probes = {"encrypted": _encrypts, "authorizes": _authorizes}
    missing = [n for n in names if not (probes[n]() if n in probes else hasattr(Replica, n))]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (issue 12, device side)")


def _encrypts() -> bool:
    """Whether this tree's replicas seal data payloads encrypted (kind 3): asked of a real
    replica in a scratch directory, once."""
    global _ENCRYPTS
    if _ENCRYPTS is None:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            replica = Replica(scratch)
            try:
                space = replica.space("probe")
                space.put("c", "e", {"f": 1})
                replica.seal()
                kinds = {payload_kind(e.payload) for e in _own_envelopes(replica, space.id)}
            finally:
                replica.close()
        _ENCRYPTS = 3 in kinds
    return _ENCRYPTS


_ENCRYPTS: bool | None = None
_AUTHORIZES: bool | None = None


def _authorizes() -> bool:
    """Whether this tree's replicas refuse a well-formed, properly encrypted data envelope
    of a stranger (asked of a real replica in a scratch directory, once)."""
    global _AUTHORIZES
    if _AUTHORIZES is None:
        import tempfile

        if not _encrypts():
            _AUTHORIZES = False
            return False
        with tempfile.TemporaryDirectory() as scratch:
            replica = Replica(Path(scratch) / "admin")
            try:
                space = replica.space("probe")
                space.put("c", "e", {"f": 1})
                replica.seal()
                body = made_body(Path(scratch) / "writer", "c", "e", {"f": 2})  # later: it would win
                env = forge_data(Identity.generate(), space.id, body, replica.secrets.keyring(), (0, b""))
                with contextlib.suppress(Exception):  # (a refusal may raise, or skip it)
                    replica.receive([env.wire], "probe", space.id, tolerate_gaps=True)
                _AUTHORIZES = replica.space(space.id).get("c", "e") == {"f": 1}
            finally:
                replica.close()
    return _AUTHORIZES


def _own_envelopes(replica: Replica, space: str) -> list[Envelope]:
    return [open_envelope(w) for w in decode_bundle(replica.export_bundle(space)).envelopes]


# -- devices ---------------------------------------------------------------------------------
@dataclass
class Device:
    """One device: a data directory that ``crdt-sync`` commands run on."""

    data: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.data.name

    async def run(self, *args: str, stdin: str | None = None,
                  env: dict[str, str] | None = None) -> tuple[int, Any, str]:
        """``crdt-sync --json --data DATA ARGS`` to its end: (exit code, parsed stdout, stderr)."""
        base = {k: v for k, v in os.environ.items() if k not in ("CRDT_SYNC_DATA", "CRDT_SYNC_PASSPHRASE")}
        proc = await asyncio.create_subprocess_exec(
            CLI, "--json", "--data", str(self.data), *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**base, **(env or {})})
        try:
            async with asyncio.timeout(PROC_WAIT):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        text, errors = out.decode(), err.decode()
        assert "Traceback" not in errors, f"{self.name} {args}: {errors}"
        assert proc.returncode is not None
        return proc.returncode, json.loads(text) if text.strip() else None, errors

    async def ok(self, *args: str, stdin: str | None = None) -> Any:
        code, out, err = await self.run(*args, stdin=stdin)
        assert code == 0, f"{self.name} {args} exited {code}: {err[-2000:]}"
        return out

    async def refused(self, *args: str) -> tuple[int, dict[str, Any]]:
        """A command that must fail: (exit code, the JSON error it printed)."""
        code, out, err = await self.run(*args)
        assert code != 0, f"{self.name} {args} succeeded: {out}"
        return code, dict(json.loads(err.strip().splitlines()[-1])["error"])

    async def init(self) -> str:
        """Make the device's key (if it has none) and return its device id."""
        return str((await self.ok("init"))["device"])

    async def sync(self, url: str) -> dict[str, Any]:
        """One ``crdt-sync sync --relay URL``: every kept space, until synced."""
        return dict(await self.ok("sync", "--relay", url))

    # -- what a thief of the device would read -----------------------------------------------
    def secrets(self) -> Secrets:
        return Secrets.open(self.data, read_only=True)

    def identity(self) -> Identity:
        return Identity(self.secrets().device_seed())

    def keyring(self) -> Keyring:
        return self.secrets().keyring()


# -- relays ----------------------------------------------------------------------------------
@asynccontextmanager
async def relay(data: Path, *args: str, enforce: bool = True) -> AsyncIterator[RelayProcess]:
    """A ``crdt-sync relay`` process on loopback with JSON logs, membership enforced (the
    default; or, with ``enforce=False``, a relay that stores and serves every chain-valid
    envelope: an old or careless relay, through which only the devices' own checks stand)."""
    process = await RelayProcess.start(data, env=None if enforce else OPEN)
    try:
        yield process
    finally:
        await process.close()


async def stop(process: RelayProcess) -> None:
    """SIGTERM and wait: its logs are complete and its database checkpointed."""
    import signal

    process.signal(signal.SIGTERM)
    assert await process.exit_code() == 0, process.lines[-20:]


def relay_db(data: Path) -> Path:
    return data / RELAY_DB / DB_NAME


def stored(data: Path, space: str | None = None) -> list[Envelope]:
    """Every envelope in the relay's database (of ``space``), in arrival order; read
    through a read-only connection, so it works while the relay runs."""
    uri = f"file:{relay_db(data)}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT wire FROM envelopes WHERE ?1 IS NULL OR space = ?1 ORDER BY id",
                          (space,)).fetchall()
    return [open_envelope(bytes(r[0])) for r in rows]


def authors(data: Path, space: str) -> dict[str, int]:
    """The highest seq of each author the relay stores in ``space``."""
    out: dict[str, int] = {}
    for env in stored(data, space):
        out[env.author] = max(out.get(env.author, 0), env.seq)
    return out


def membership_records(envelopes: Iterable[Envelope]) -> list[Record]:
    """The membership records the kind-4 envelopes carry (the relay can read these)."""
    return [r for e in envelopes if payload_kind(e.payload) == 4 for r in decode_membership(e.payload)]


def leaks(directory: Path, needles: Iterable[str], logs: Iterable[str] = ()) -> list[tuple[str, str]]:
    """``(needle, where)`` for each needle found, as UTF-8 bytes, in any file under
    ``directory`` (the database, its WAL and journal, anything else the relay wrote) or in
    a log line: what the relay's operator would find by grepping."""
    found: list[tuple[str, str]] = []
    wanted = [(n, n.encode()) for n in needles]
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        content = path.read_bytes()
        found += [(n, str(path)) for n, raw in wanted if raw in content]
    text = "\n".join(logs)
    found += [(n, "log") for n, _ in wanted if n in text]
    return found


# -- forging what the CLI cannot make ----------------------------------------------------------
def head(data: Path, space: str, author: str) -> tuple[int, bytes]:
    """``(seq, hash)`` of the last envelope of ``author`` the relay stores, ``(0, b"")`` if none."""
    mine = [e for e in stored(data, space) if e.author == author]
    if not mine:
        return 0, b""
    last = max(mine, key=lambda e: e.seq)
    return last.seq, last.hash


def latest_epoch(keyring: Keyring, space: str) -> tuple[bytes, bytes]:
    """``(epoch_id, key)`` of the highest epoch of ``space`` that ``keyring`` holds."""
    _n, epoch_id = max(keyring.epochs(space))
    key = keyring.key(space, epoch_id)
    assert key is not None
    return epoch_id, key


def made_body(scratch: Path, collection: str, entity: str, fields: dict[str, Any]) -> bytes:
    """The plaintext body (payload format 2) of a write of ``fields``, as an honest device
    of this build makes it: written by a scratch replica, taken out of its own envelope.
    Its registers carry the scratch replica's clock: made after a device's write, it would
    win over it if it were accepted."""
    replica = Replica(scratch)
    try:
        space = replica.space("scratch")
        space.put(collection, entity, fields)
        replica.seal()
        env = [e for e in _own_envelopes(replica, space.id)
               if e.author == replica.device_id and payload_kind(e.payload) in (2, 3)][-1]
        if payload_kind(env.payload) == 2:
            return env.payload
        return decrypt_payload(replica.secrets.keyring().keys_of(space.id), space.id, env.author_key,
                               env.seq, env.payload)
    finally:
        replica.close()


def forge_data(author: Identity, space: str, body: bytes, keyring: Keyring, after: tuple[int, bytes],
               hlc: int | None = None) -> Envelope:
    """A data envelope of ``author`` in ``space`` (next after ``after``, its chain head),
    encrypted properly under the latest epoch ``keyring`` holds: only membership can refuse it."""
    seq = after[0] + 1
    epoch_id, key = latest_epoch(keyring, space)
    payload = encrypt_payload(key, epoch_id, space, author.public_key, seq, body)
    return seal(author, space, seq, after[1], hlc if hlc is not None else hlc_at(now_ms()), payload)


def forge_records(author: Identity, space: str, records: list[Record], after: tuple[int, bytes]) -> Envelope:
    """A membership envelope of ``author`` carrying ``records`` (next after ``after``)."""
    at = max(r.hlc for r in records) + 1
    return seal(author, space, after[0] + 1, after[1], at, encode_membership(records))


def holds(directory: Path, blobs: Iterable[bytes]) -> bool:
    """Whether any file under ``directory`` holds any of ``blobs`` (raw bytes: keys)."""
    wanted = list(blobs)
    return any(b in p.read_bytes() for p in directory.rglob("*") if p.is_file() for b in wanted)


async def logged(process: RelayProcess, event: str, **fields: str) -> dict[str, Any]:
    """The first JSON log line of the relay with ``event`` and these fields (waits for it)."""

    def match(line: str) -> bool:
        if f'"event": "{event}"' not in line:
            return False
        entry = json.loads(line)
        return all(entry.get(k) == v for k, v in fields.items())

    return dict(json.loads(await process.wait_line(match, f"{event} {fields}")))


# -- the devices' usual steps -------------------------------------------------------------------
def tag(what: str) -> str:
    """A value no other test and no format writes: finding it anywhere is a leak."""
    return f"{what}{uuid.uuid4().hex[:10]}"


async def create(alice: Device, name: str, writes: list[tuple[str, str, str]]) -> str:
    """Alice creates space ``name`` and writes ``(collection, entity, "field=value")``."""
    sid = str((await alice.ok("spaces", "create", name))["id"])
    for collection, entity, field in writes:
        await alice.ok("put", sid, collection, entity, field)
    return sid


async def let_in(alice: Device, other: Device, sid: str, url: str, rights: str = "write") -> str:
    """Alice lets ``other`` in, over the relay at ``url``: by an invite where this tree's
    devices have them (:func:`invite`), else by a grant to its device id, which it then keeps
    and syncs. Returns the other device's id."""
    if hasattr(Replica, "invite") and hasattr(Replica, "join"):
        return await invite(alice, other, sid, url, rights)
    device = await other.init()
    await alice.ok("grant", sid, device, "--rights", rights)
    await alice.sync(url)
    await other.ok("keep", sid)
    await other.sync(url)
    return device


async def invite(alice: Device, other: Device, sid: str, url: str, rights: str = "write") -> str:
    """Alice invites ``other``; it joins over the relay at ``url``; alice sees the redemption.
    Returns the other device's id."""
    token = (await alice.ok("invite", sid, "--rights", rights))["token"]
    await alice.sync(url)  # the invite record reaches the relay
    joined = await other.ok("join", token)
    await other.sync(url)  # the redemption up, the space down
    await alice.sync(url)
    return str(joined["device"])


# -- where a forgery is pushed (last: the marks probe the replica with the tools above) --------
#: Where a forged membership record is pushed: a relay process that enforces membership (it
#: must refuse it), or one that does not, so that it reaches the devices (which must refuse it
#: themselves). Membership records are judged by devices of this tree already; the enforcing
#: relay needs devices that seal encrypted spaces (its refusal of plaintext stops them).
THROUGH = [pytest.param("enforcing", marks=needs("encrypted")), "careless"]
#: The same for a forged data envelope: devices refuse those once they authorize data.
DATA_THROUGH = [pytest.param("enforcing", marks=needs("encrypted")),
                pytest.param("careless", marks=needs("authorizes"))]


@asynccontextmanager
async def through(kind: str, data: Path) -> AsyncIterator[RelayProcess]:
    async with relay(data, enforce=kind == "enforcing") as process:
        yield process
