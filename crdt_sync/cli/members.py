"""The commands of spaces that belong to their members (issue 12): ``spaces`` (list, create,
rename), ``invite``, ``join TOKEN``, ``keep``, ``members``, ``grant``, ``revoke``, ``migrate``.

SPACE on a command line is a space id or a local name (:func:`space_id`); a name that two
spaces carry is refused with the ids to use instead (``ambiguous-space``, exit 2).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CrdtSyncError, NotFound
from .local import open_replica
from .output import Output, UsageError, data_dir, short, space_id

if TYPE_CHECKING:
    from ..replica import Replica

RIGHTS = ("read", "write", "admin")
#: What a duration on the command line may say: ``90s``, ``30m``, ``12h``, ``7d``, ``2w``.
_DURATION = re.compile(r"(\d{1,9})([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
#: An invite lives 7 days unless ``--expires`` says otherwise (at most MAX_INVITE_MS).
INVITE_EXPIRES = "7d"
#: The longest a grant's ``--expires`` may be (about a century: past it, "never" is meant).
MAX_GRANT_MS = 36_500 * 86_400_000

#: The commands that write to a space's data (a refusal by the device's own rights gets a hint).
WRITE_COMMANDS = frozenset({"put", "delete"})
#: What to do about a write that the device's own rights refuse (``Rejected.reason``).
HINTS = {
    "not-admin": "only an admin of the space can do that (see `crdt-sync members SPACE`)",
    "read-only": "this device may only read this space: an admin gives it write rights with "
                 "`crdt-sync grant SPACE DEVICE --rights write`",
    "out-of-scope": "this device may write only to the collections of its grant "
                    "(see `crdt-sync members SPACE`)",
    "expired": "this device's grant has expired: an admin grants it again "
               "(`crdt-sync grant SPACE DEVICE --rights ...`)",
    "revoked": "this device was removed from this space",
}


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    def command(name: str, func: Any, what: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, parents=[common], help=what,
                                                       description=what)
        p.set_defaults(func=func)
        return p

    p = command("spaces", cmd_spaces, "the spaces this device keeps (id, name, rights, members); "
                                      "`spaces create NAME`, `spaces rename SPACE NAME`")
    actions = p.add_subparsers(dest="action", required=False, metavar="ACTION")
    command("create", cmd_spaces_create, "create a space: this device is its first admin",
            actions).add_argument("name")
    p = command("rename", cmd_spaces_rename, "rename a space (its members see the new name)", actions)
    p.add_argument("space", help="a space id or a local name")
    p.add_argument("name")

    p = command("invite", cmd_invite, "print a single-use invite token for a new device "
                                      "(it joins with `crdt-sync join TOKEN`)")
    p.add_argument("space", help="a space id or a local name")
    _rights_args(p)
    p.add_argument("--expires", metavar="DURATION", default=INVITE_EXPIRES,
                   help=f"the token can be redeemed for this long: 90s, 30m, 12h, 7d, 2w "
                        f"(default {INVITE_EXPIRES}, at most 30d)")
    p.add_argument("--no-history", action="store_true",
                   help="the new device reads only what is written from its join on")
    p.add_argument("--qr", action="store_true", help="also print the token as a terminal QR code")
    command("join", cmd_join, "join a space with an invite token (`-`: read it from stdin)") \
        .add_argument("token")
    command("keep", cmd_keep, "keep and sync a space this device has").add_argument(
        "space", help="a space id or a local name")
    command("members", cmd_members, "a space's members: rights, collections, expiry, who granted") \
        .add_argument("space", help="a space id or a local name")
    p = command("grant", cmd_grant, "give rights to a device whose id is known (no token)")
    p.add_argument("space", help="a space id or a local name")
    p.add_argument("device", help="the device's id (`crdt-sync init` prints it)")
    _rights_args(p)
    p.add_argument("--expires", metavar="DURATION", help="the grant lapses after this long: 12h, "
                                                         "30d, 2w (default: never)")
    p = command("revoke", cmd_revoke, "remove a device from a space and rotate its key")
    p.add_argument("space", help="a space id or a local name")
    p.add_argument("device", help="the member's device id (or a prefix of it that one member has)")
    command("migrate", cmd_migrate, "move a data directory of an older crdt-sync to this one's "
                                    "format (the old store is kept as a backup)") \
        .add_argument("dir", nargs="?", help="the data directory (default: --data)")


def _rights_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rights", required=True, choices=RIGHTS)
    p.add_argument("--collection", dest="collections", action="append", metavar="C",
                   help="only these collections (repeat it for several; default: all)")


def parse_duration(text: str, what: str, most_ms: int) -> int:
    """``7d`` as milliseconds, for ``what`` (an option); at most ``most_ms``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{what} {text!r}: a duration is a number and a unit, e.g. 90s, 30m, 12h, 7d, 2w")
    ms = int(match[1]) * _UNIT_MS[match[2]]
    if ms <= 0:
        raise UsageError(f"{what} {text!r}: a duration is more than zero")
    if ms > most_ms:
        raise UsageError(f"{what} {text!r}: at most {_days(most_ms)}")
    return ms


def _days(ms: int) -> str:
    return f"{ms // 86_400_000} days" if ms >= 86_400_000 else f"{ms // 1000} seconds"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def when(ms: int | None) -> str | None:
    """An absolute time in ms as ISO 8601 UTC (``None``: 0 or none means never)."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- spaces ------------------------------------------------------------------------------------
def _info(info: Any) -> dict[str, Any]:
    rights = info.rights
    return {"id": info.id, "name": info.name,
            "rights": rights if rights is None or isinstance(rights, str) else rights.name.lower(),
            "members": info.members}


def cmd_spaces(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args, out) as replica:
        items = [_info(i) for i in replica.space_infos()]
    out.emit({"spaces": items}, lambda: out.table(
        None, ["id", "name", "rights", "members"],
        [(i["id"], i["name"] or "", i["rights"] or "-", str(i["members"])) for i in items])
        if items else out.console.print("(no spaces: `crdt-sync spaces create NAME`, or join one "
                                        "with `crdt-sync join TOKEN`)"))


def cmd_spaces_create(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        space = replica.create_space(args.name)
        result = {"id": space.id, "name": space.name, "created": True}
    out.emit(result, lambda: out.console.print(
        f"created space {result['name']} ({result['id']}); this device is its admin. Invite a "
        f"device with `crdt-sync invite {result['id']} --rights write`", highlight=False))


def cmd_spaces_rename(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        replica.rename_space(sid, args.name)
    out.emit({"id": sid, "name": args.name},
             lambda: out.console.print(f"renamed {sid} to {args.name}", highlight=False))


def cmd_keep(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        replica.keep(sid)
    out.emit({"space": sid, "kept": True},
             lambda: out.console.print(f"keeping and syncing {args.space} ({sid})", highlight=False))


# -- invites -----------------------------------------------------------------------------------
def cmd_invite(args: argparse.Namespace, out: Output) -> None:
    from ..membership import MAX_INVITE_MS

    expires_ms = parse_duration(args.expires, "--expires", MAX_INVITE_MS)
    with open_replica(args) as replica:
        _need_invites(replica)
        sid = space_id(replica, args.space)
        token = replica.invite(sid, rights=args.rights, collections=args.collections,
                               expires_ms=expires_ms, history=not args.no_history)
        name = replica.space(sid).name
        expires = when(now_ms() + expires_ms)
    qr = None
    if args.qr:  # the invite exists now: a token too long for a QR code still prints as text
        try:
            qr = render_qr(token)
        except CrdtSyncError as exc:
            out.warn("qr", str(exc))
    result = {"space": sid, "name": name, "token": token, "rights": args.rights,
              "collections": args.collections, "history": not args.no_history, "expires": expires,
              **({"qr": qr} if qr is not None else {})}

    def human() -> None:
        scope = ", ".join(args.collections) if args.collections else "all collections"
        out.err.print(f"invite to {name} ({sid}): {args.rights}, {scope}, "
                      f"{'with' if not args.no_history else 'without'} its history; single use, "
                      f"redeem before {expires}. On the new device: crdt-sync join TOKEN",
                      highlight=False)
        if qr is not None:
            sys.stdout.write(qr)
        print(token)

    out.emit(result, human)


def _need_invites(replica: Replica) -> None:
    """TODO(dev-a): gone once the core's invites land (until then, grants by device id)."""
    if not hasattr(replica, "invite"):
        raise CrdtSyncError("invites are not in this build of crdt-sync yet: give a device rights "
                            "by its id with `crdt-sync grant SPACE DEVICE --rights ...` and send it "
                            "a bundle of the space (`crdt-sync export`)")


def render_qr(token: str) -> str:
    """The token as a QR code for a terminal (half-block characters, two rows a line)."""
    import io

    import segno

    try:
        code = segno.make_qr(token, error="l", boost_error=False)
    except segno.DataOverflowError:
        raise CrdtSyncError(f"the token ({len(token)} characters) is too long for a QR code; "
                            "pass it as text (or invite with --no-history for a shorter one)") from None
    text = io.StringIO()
    code.terminal(out=text, compact=True)
    return text.getvalue()


def cmd_join(args: argparse.Namespace, out: Output) -> None:
    from ..membership import TOKEN_PREFIX

    token = "".join((sys.stdin.read() if args.token == "-" else args.token).split())  # wrapped
    if not token.startswith(TOKEN_PREFIX):
        raise UsageError(f"join takes an invite token (it starts with {TOKEN_PREFIX!r}; "
                         "`crdt-sync invite SPACE` prints one); to keep syncing a space this device "
                         "has, use `crdt-sync keep SPACE`")
    with open_replica(args) as replica:
        _need_invites(replica)
        space = replica.join(token)
        result = {"space": space.id, "name": space.name, "device": replica.device_id, "joined": True}
    out.emit(result, lambda: out.console.print(
        f"joined {result['name']} ({result['space']}) as "
        f"{short(result['device'])}; sync to receive its data (`crdt-sync sync --relay URL`, or "
        "import a bundle from a member)", highlight=False))


# -- members -----------------------------------------------------------------------------------
def _member(member: Any, names: dict[bytes, str], me: str) -> dict[str, Any]:
    return {"device": member.device, "rights": member.rights.name.lower(),
            "collections": [names.get(d, d.hex()[:16]) for d in member.scope] or None,
            "expires": when(member.not_after_ms), "granted_by": member.granted_by, "via": member.via,
            "revoked_after": member.revoked_after, "reused_invite": member.reused_invite,
            "this_device": member.device == me}


def _line(m: dict[str, Any]) -> str:
    """One member for people: the full id (to copy into ``revoke``), then what it may do."""
    scope = ", ".join(m["collections"]) if m["collections"] else "all collections"
    until = f"until {m['expires'].replace('T', ' ')}" if m["expires"] else "no expiry"
    how = {"genesis": "created the space", "invite": f"invited by {short(m['granted_by'])}"}.get(
        m["via"], f"granted by {short(m['granted_by'])}")
    notes = [how]
    if m["revoked_after"] is not None:
        notes.append(f"[bold red]revoked[/]: its writes after seq {m['revoked_after']} are set aside")
    if m["reused_invite"]:
        notes.append("[bold red]void[/]: its invite was redeemed twice (invite it again)")
    if m["this_device"]:
        notes.append("this device")
    return f"{m['device']}  [bold]{m['rights']:<5}[/] {scope}, {until}; {'; '.join(notes)}"


def cmd_members(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args, out) as replica:
        sid = space_id(replica, args.space)
        items = [_member(m, _scope_names(replica, sid), replica.device_id) for m in replica.members(sid)]

    def human() -> None:
        out.console.print(f"members of {args.space} ({sid}): {len(items)}", highlight=False)
        for m in items:
            out.console.print(_line(m), highlight=False)

    out.emit({"space": sid, "members": items}, human)


def _scope_names(replica: Replica, sid: str) -> dict[bytes, str]:
    """The names of the collections this device has seen in ``sid``, by scope digest: a grant
    names its collections by a keyed digest only, so that the relay never learns them."""
    from ..membership import scope_digest
    from ..space_crypto import scope_key

    secret = replica.secrets.keyring().secret(sid)
    if secret is None:
        return {}
    key = scope_key(secret)
    return {scope_digest(key, c): c for c in {c for c, _ in replica.space(sid).list()}}


def cmd_grant(args: argparse.Namespace, out: Output) -> None:
    device = _device_arg(args.device)
    expires_ms = parse_duration(args.expires, "--expires", MAX_GRANT_MS) if args.expires else 0
    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        replica.grant(sid, device, args.rights, collections=args.collections, expires_ms=expires_ms)
        expires = when(now_ms() + expires_ms) if expires_ms else None
    result = {"space": sid, "device": device, "rights": args.rights, "collections": args.collections,
              "expires": expires}
    out.emit(result, lambda: out.console.print(
        f"granted {args.rights} in {args.space} to {short(device)} "
        f"({', '.join(args.collections) if args.collections else 'all collections'}, "
        f"{'until ' + expires if expires else 'no expiry'}); it takes effect as the grant syncs",
        highlight=False))


def _device_arg(text: str) -> str:
    from nacl.bindings import crypto_sign_ed25519_pk_to_curve25519
    from nacl.exceptions import CryptoError

    from ..identity import public_key_of

    try:  # keys are sealed to the device: its id must be a point of the curve, not only base32
        crypto_sign_ed25519_pk_to_curve25519(public_key_of(text))
    except (CrdtSyncError, CryptoError, ValueError):
        raise UsageError(f"{text!r} is not a device id (`crdt-sync init` prints a device's id)") from None
    return text


def cmd_revoke(args: argparse.Namespace, out: Output) -> None:
    with open_replica(args) as replica:
        sid = space_id(replica, args.space)
        device = _member_arg(args.device, [m.device for m in replica.members(sid)], args.space)
        if device == replica.device_id:
            raise UsageError("a device cannot revoke itself; to stop syncing a space, "
                             "`crdt-sync leave SPACE`")
        replica.revoke(sid, device)
    out.emit({"space": sid, "device": device, "revoked": True, "rotated": True},
             lambda: out.console.print(
                 f"revoked {short(device)} in {args.space} and rotated the space key: what it wrote "
                 "before stays, nothing written from now on is readable by it", highlight=False))


def _member_arg(text: str, members: Sequence[str], space: str) -> str:
    """A member's device id from its id or from a prefix that exactly one member has."""
    if text in members:
        return text
    matches = [m for m in members if len(text) >= 4 and m.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{text!r} is the start of several members' ids: "
                         f"{', '.join(matches)}; give more of it")
    raise NotFound(f"{text} is not a member of {space} (see `crdt-sync members {space}`)")


# -- migrate -----------------------------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace, out: Output) -> None:
    from ..migrate import migrate

    path = Path(args.dir) if args.dir else data_dir(args.data)
    if not path.is_dir():
        raise NotFound(f"no data directory at {path}")
    report = migrate(path, passphrase=_passphrase(path)).to_dict()
    out.emit(report, lambda: out.console.print(_migrated(path, report), highlight=False))


def _passphrase(path: Path) -> str | None:
    """The passphrase of sealed keys, asked before anything is moved (None: none is needed,
    or ``$CRDT_SYNC_PASSPHRASE`` has it)."""
    from ..errors import PassphraseError
    from ..secrets import KEYS_FILE, Secrets

    if not (path / KEYS_FILE).exists():
        return None
    try:
        Secrets.open(path, read_only=True)
        return None
    except PassphraseError as exc:
        if exc.reason != "missing" or not sys.stdin.isatty():
            raise
    import getpass

    passphrase = getpass.getpass(f"Passphrase of {path}: ")
    Secrets.open(path, passphrase, read_only=True)  # a wrong one stops here, nothing moved
    return passphrase


def _migrated(path: Path, report: dict[str, Any]) -> str:
    if not report["migrated"]:
        return f"{path} needs no migration (it is of this version's format, or empty)"
    names = ", ".join(f"{name} ({sid})" for name, sid in report["spaces"].items()) or "no spaces"
    return (f"migrated {path}: {names}, {report['entities']} entities; each space is new, with "
            f"this device as its admin: invite the other devices again. The old store is kept at "
            f"{report['backup']}")
