"""A device's local secrets: its key seed and every space's keys, in ``DIR/keys``.

The file is written whole and atomically (a temporary file, fsync, rename), with mode
0600, and the data directory is made 0700. Optionally a passphrase seals it at rest:
Argon2id (``nacl.pwhash.argon2id``; salt and limits stored in the file) derives a key for
``nacl.secret.SecretBox``. Layout (docs/DESIGN.md, "Encryption", "Key file")::

    keys     = cbor([1, kdf, body])
    kdf      = null | ["argon2id13", salt: bstr16, opslimit: uint, memlimit: uint]
    body     = contents (kdf null) | nonce(24) || secretbox(contents)   (a bstr either way)
    contents = cbor({"device_seed": bstr32,
                     "spaces": {space_id: [secret S, [[epoch_n, epoch_id, key], ...]]}})

Several processes may open one data directory: whoever creates or saves the file holds an
exclusive ``flock`` on ``DIR/keys.lock``, and :meth:`Secrets.save` first merges what another
process saved meanwhile (keys are only ever added), so no process loses another's keys.

The passphrase: the ``passphrase`` argument, else the environment variable
:data:`PASSPHRASE_ENV` (for daemons). A new directory opened with a passphrase is sealed
with it; an existing unsealed one stays unsealed until :meth:`Secrets.set_passphrase`
(``crdt-sync init --passphrase``). Opening a sealed one without its passphrase, or with a
wrong one, raises :class:`PassphraseError`, which says what to set.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import nacl.pwhash.argon2id as argon2id
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox
from nacl.utils import random as random_bytes

from .cbor_exact import loads_exact
from .diskfaults import disk_full, is_full
from .errors import CrdtSyncError, PassphraseError, StoreError
from .space_crypto import Keyring

#: The environment variable a daemon puts the passphrase in.
PASSPHRASE_ENV = "CRDT_SYNC_PASSPHRASE"
KEYS_FILE = "keys"
LOCK_FILE = "keys.lock"
KEYS_VERSION = 1
KDF_NAME = "argon2id13"
#: libsodium's "interactive" limits: about 0.1 s and 64 MiB per open.
OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
#: what a key file may ask for (libsodium's "sensitive" limits): a file cannot make an
#: open take minutes or gigabytes
MAX_OPSLIMIT = argon2id.OPSLIMIT_SENSITIVE
MAX_MEMLIMIT = argon2id.MEMLIMIT_SENSITIVE
#: the largest key file read (about 7,000 spaces of 100 epochs)
MAX_KEYS_FILE = 64 << 20

__all__ = ["KEYS_FILE", "PASSPHRASE_ENV", "PassphraseError", "Secrets"]


class Secrets:
    """The device seed and the :class:`~crdt_sync.space_crypto.Keyring` of one data directory.

    Open with :meth:`open`. The replica owns the one instance of its directory; the parts
    that encrypt and decrypt are handed :meth:`keyring`, and whoever adds keys calls
    :meth:`save`.
    """

    def __init__(self, directory: Path, seed: bytes, keyring: Keyring, kdf: list[Any] | None,
                 box_key: bytes | None, read_only: bool) -> None:
        self.path = directory / KEYS_FILE
        self._directory = directory
        self._seed = seed
        self._keyring = keyring
        self._kdf = kdf
        self._box_key = box_key
        self.read_only = read_only
        self._saved = keyring.version
        self._seen: tuple[int, int] | None = None  # (mtime_ns, size) of the file last read

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | os.PathLike[str], passphrase: str | None = None, *,
             legacy_seed: bytes | None = None, read_only: bool = False) -> Secrets:
        """The secrets of ``directory``, created (with a new device seed) if it has none.

        Args:
            passphrase: opens a sealed file, and seals a new one; None: ``$CRDT_SYNC_PASSPHRASE``.
            legacy_seed: the device seed a data directory of an older build kept in its store:
                a new key file is made with it (the caller then deletes it from the store);
                an existing key file must hold the same seed.
            read_only: create nothing and write nothing; without a key file, a
                ``legacy_seed`` is used as it is, else :class:`StoreError`.

        Raises:
            PassphraseError: sealed, and the passphrase is missing or wrong.
            StoreError: the file is damaged, or names another device than ``legacy_seed``.
        """
        path = Path(directory)
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV) or None
        if read_only:
            found = cls._read(path, passphrase, read_only=True)
            if found is None:
                if legacy_seed is None:
                    raise StoreError(f"{path} holds no device yet: nothing to read")
                return cls(path, _check_seed(legacy_seed), Keyring(), None, None, True)
            return found._same_device(legacy_seed)
        with _locked(path):
            found = cls._read(path, passphrase, read_only=False)
            if found is not None:
                return found._same_device(legacy_seed)
            seed = os.urandom(32) if legacy_seed is None else _check_seed(legacy_seed)
            secrets = cls(path, seed, Keyring(), None, None, False)
            if passphrase is not None:
                secrets._kdf, secrets._box_key = _new_kdf(passphrase)
            secrets._write()
            return secrets

    def _same_device(self, legacy_seed: bytes | None) -> Secrets:
        if legacy_seed is not None and bytes(legacy_seed) != self._seed:
            raise StoreError(f"{self._directory}: the store and {self.path} hold different device keys; "
                             f"restore the data directory from one backup")
        return self

    @classmethod
    def _read(cls, directory: Path, passphrase: str | None, read_only: bool) -> Secrets | None:
        path = directory / KEYS_FILE
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_size > MAX_KEYS_FILE:
                    raise StoreError(f"{path} is {st.st_size} bytes: not a key file")
                data = f.read(MAX_KEYS_FILE + 1)
        except FileNotFoundError:
            return None
        seed, ring, kdf, box_key = _decode(path, data, passphrase)
        if not read_only and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o600)  # copied in with a looser mode: tighten it
        secrets = cls(directory, seed, ring, kdf, box_key, read_only)
        secrets._seen = (st.st_mtime_ns, st.st_size)
        return secrets

    # -- what it holds ---------------------------------------------------------------------
    def device_seed(self) -> bytes:
        return self._seed

    def keyring(self) -> Keyring:
        return self._keyring

    @property
    def sealed(self) -> bool:
        """The file is sealed with a passphrase."""
        return self._kdf is not None

    # -- writing ---------------------------------------------------------------------------
    def save(self) -> None:
        """Write the keyring if it changed since the last save, after merging in what other
        processes on this directory saved meanwhile."""
        if self._keyring.version == self._saved:
            return
        self._check_writable()
        with _locked(self._directory):
            self._merge_from_disk()
            self._write()

    def reload(self) -> int:
        """Merge in what other processes on this directory saved (cheap if the file did not
        change); the number of epochs added."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0
        if (st.st_mtime_ns, st.st_size) == self._seen:
            return 0
        return self._merge_from_disk()

    def set_passphrase(self, passphrase: str | None) -> None:
        """Seal the file with a new passphrase (a new salt), or unseal it (None)."""
        self._check_writable()
        if passphrase is not None and not passphrase:
            raise CrdtSyncError("the passphrase is empty")
        with _locked(self._directory):
            self._merge_from_disk()
            self._kdf, self._box_key = (None, None) if passphrase is None else _new_kdf(passphrase)
            self._write()

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self._directory} is open read-only: the keys cannot be saved")

    def _merge_from_disk(self) -> int:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read(MAX_KEYS_FILE + 1)
        except FileNotFoundError:
            return 0
        seed, ring, _kdf, _key = _decode(self.path, data, None, self._kdf, self._box_key)
        if seed != self._seed:
            raise StoreError(f"{self.path} now holds another device's key: restore the data "
                             f"directory from one backup")
        self._seen = (st.st_mtime_ns, st.st_size)
        return self._keyring.merge(ring)

    def _write(self) -> None:
        contents = cbor2.dumps({"device_seed": self._seed, "spaces": self._keyring.to_cbor()},
                               canonical=True)
        body = contents if self._box_key is None else bytes(SecretBox(self._box_key).encrypt(contents))
        data = cbor2.dumps([KEYS_VERSION, self._kdf, body], canonical=True)
        version = self._keyring.version
        tmp = self._directory / f"{KEYS_FILE}.{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an old leftover temporary file kept its mode
                with os.fdopen(fd, "wb", closefd=False) as f:
                    f.write(data)
                    f.flush()
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # the old file stays whole
            if is_full(exc, self.path):
                raise disk_full(self.path, "saving the device's keys") from exc
            raise
        _fsync_directory(self._directory)
        st = os.stat(self.path)
        self._seen = (st.st_mtime_ns, st.st_size)
        self._saved = version


# -- the file -------------------------------------------------------------------------------
def _check_seed(seed: bytes) -> bytes:
    seed = bytes(seed)
    if len(seed) != 32:
        raise StoreError("a device seed is 32 bytes")
    return seed


def _new_kdf(passphrase: str) -> tuple[list[Any], bytes]:
    if not passphrase:
        raise CrdtSyncError("the passphrase is empty")
    kdf: list[Any] = [KDF_NAME, random_bytes(argon2id.SALTBYTES), OPSLIMIT, MEMLIMIT]
    return kdf, _derive(passphrase, kdf)


def _derive(passphrase: str, kdf: list[Any]) -> bytes:
    _name, salt, ops, mem = kdf
    # surrogateescape: a passphrase from the environment that is not UTF-8 is its bytes as given
    secret = passphrase.encode("utf-8", "surrogateescape")
    return argon2id.kdf(SecretBox.KEY_SIZE, secret, salt,  # type: ignore[no-any-return]
                        opslimit=ops, memlimit=mem)


def _check_kdf(path: Path, kdf: object) -> list[Any] | None:
    if kdf is None:
        return None
    ok = (isinstance(kdf, list) and len(kdf) == 4 and kdf[0] == KDF_NAME
          and isinstance(kdf[1], bytes) and len(kdf[1]) == argon2id.SALTBYTES
          and type(kdf[2]) is int and argon2id.OPSLIMIT_MIN <= kdf[2] <= MAX_OPSLIMIT
          and type(kdf[3]) is int and argon2id.MEMLIMIT_MIN <= kdf[3] <= MAX_MEMLIMIT)
    if not ok:
        raise StoreError(f"{path}: unknown passphrase parameters {kdf!r}")
    return kdf  # type: ignore[return-value]


def _decode(path: Path, data: bytes, passphrase: str | None, kdf_held: list[Any] | None = None,
            key_held: bytes | None = None) -> tuple[bytes, Keyring, list[Any] | None, bytes | None]:
    """``(seed, keyring, kdf, box key)`` of a key file. A file sealed with the parameters
    ``kdf_held`` is opened with ``key_held`` (no second Argon2id run)."""
    damaged = f"{path} is damaged (not a crdt-sync key file); restore it from a backup"
    if len(data) > MAX_KEYS_FILE:
        raise StoreError(damaged)
    try:
        top = loads_exact(data)
    except Exception:  # trust boundary: cbor2 raises several types on garbage
        raise StoreError(damaged) from None
    if not (isinstance(top, list) and len(top) == 3 and type(top[0]) is int and isinstance(top[2], bytes)):
        raise StoreError(damaged)
    if top[0] != KEYS_VERSION:
        raise StoreError(f"{path} is of key file version {top[0]}; this build reads {KEYS_VERSION}: "
                         f"upgrade crdt-sync")
    kdf = _check_kdf(path, top[1])
    body: bytes = top[2]
    box_key: bytes | None = None
    if kdf is not None:
        if kdf == kdf_held and key_held is not None:
            box_key = key_held
        elif passphrase is None:
            raise PassphraseError("missing", f"{path} is sealed with a passphrase: set {PASSPHRASE_ENV} "
                                  f"to it (from Python: Replica(..., passphrase=...))")
        else:
            box_key = _derive(passphrase, kdf)
        try:
            body = SecretBox(box_key).decrypt(body)
        except CryptoError:
            raise PassphraseError("wrong", f"the passphrase does not open {path}: set {PASSPHRASE_ENV} "
                                  f"to the one given to `crdt-sync init --passphrase`") from None
    try:
        contents = loads_exact(body)
        if not isinstance(contents, dict):
            raise ValueError("not a map")
        seed = contents["device_seed"]
        if not (isinstance(seed, bytes) and len(seed) == 32):
            raise ValueError("no device seed")
        ring = Keyring.from_cbor(contents["spaces"])
    except Exception:  # trust boundary, as above (KeyError, ValueError, cbor2's errors)
        raise StoreError(damaged) from None
    return seed, ring, kdf, box_key


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of the key file (creating or saving it), the directory made 0700."""
    directory.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(os.stat(directory).st_mode) != 0o700:
        os.chmod(directory, 0o700)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
