"""Finding 1 of issue 11 through the real relay and real CLI processes: one signed envelope
whose payload is garbage used to stall a space for everyone.

A member's key (a writer of the space gone bad, or its key leaked: the relay enforces
membership, so a stranger's would not even be stored) signs an envelope whose payload is not
a crdt-sync payload and pushes it to the relay, which stores it (it does not read
payloads). Before quarantine, every device's sync of that space then ended with ERROR 5
and no later edit from any author arrived, ever.
Now each device sets that author aside in that space, tells the relay (which stops sending
it that chain), and keeps syncing every honest author.
"""

from __future__ import annotations

import json
from pathlib import Path

from crdt_sync import Replica
from crdt_sync.envelope import Envelope, seal
from crdt_sync.hlc import wall_ms
from crdt_sync.protocol.messages import Ack, Error, WireEnvelope
from crdt_sync.space_crypto import encrypt_payload
from tests.conftest import ReplicaFactory
from tests.e2e_helpers import latest_epoch
from tests.helpers import SHARED, share
from tests.relay_helpers import (
    RawPeer,
    SwapEnvelopes,
    bystanders,
    relay_process,
    run_cli,
    running_relay,
    sync_once,
)
from tests.sync_helpers import fill

#: an hour from now: later than the register clocks of payloads written during the run (a register clock
#: must not exceed its envelope's), and well within the day ahead that a receiver allows
HLC = (wall_ms() + 3_600_000) << 16


def poisoned(member: Replica, space: str, seq: int = 1, prev: bytes = b"") -> Envelope:
    """An envelope ``member`` signs in ``space``, encrypted with the space's key as any writer's
    is (a member gone bad, or its key leaked): it decrypts, and what it holds is not a
    crdt-sync payload. Membership cannot refuse it: the author may write there."""
    body = b"\x00this is not a crdt-sync payload"
    epoch_id, key = latest_epoch(member.secrets.keyring(), space)
    payload = encrypt_payload(key, epoch_id, space, member.identity.public_key, seq, body)
    return seal(member.identity, space, seq, prev, HLC + seq, payload)


async def push_poison(url: str, carrier: Replica, space: str) -> Envelope:
    """The bad member's device runs a genuine session with the relay and pushes its envelope
    in place of the one it wrote (signatures do not make it trustworthy)."""
    fill(carrier, "decoy", 1, space)  # so that its session sends one ENVELOPES frame in the space
    env = poisoned(carrier, space)
    wire = WireEnvelope(env.author_key, env.seq, env.hlc, env.payload, env.signature)
    swap = SwapEnvelopes(wire, once=True)
    swapped = swap.batches

    async with RawPeer.open(url, carrier) as raw:
        await raw.converse(lambda m: isinstance(m, Ack) and bool(swapped) and m.batch == swapped[0],
                           tamper=swap)
        assert not any(isinstance(m, Error) for m in raw.received)  # the relay took it
    return env


async def test_one_bad_envelope_no_longer_stalls_the_space(tmp_path: Path,
                                                          open_replica: ReplicaFactory) -> None:
    alice, bob = open_replica("alice", seal_interval=0), open_replica("bob", seal_interval=0)
    stranger = open_replica("stranger", seal_interval=0)  # a writer of alice's space, gone bad
    space = share(alice, bob, stranger, rights="write")
    async with running_relay(tmp_path / "relay") as relay, bystanders(relay.url) as check:
        assert (await sync_once(alice, relay.url)).synced  # the space's genesis and grants
        env = await push_poison(relay.url, stranger, space)
        assert relay.store.version_vector(space)[stranger.device_id] == 1  # stored: payloads stay unread
        await check("live-devices-after-the-poison")  # live sessions carry on too

        fill(alice, "a", 2, space)
        first = await sync_once(alice, relay.url)
        assert first.synced and first.ok, first.closed
        pulled = await sync_once(bob, relay.url)
        assert pulled.synced and pulled.ok, pulled.closed  # was: ERROR 5 rejected-envelope
        assert bob.version_vector(space)[alice.device_id] == SHARED + 2
        [held] = bob.quarantined(space)
        assert (held.author, held.from_seq, held.reason, held.hash) == (stranger.device_id, 1,
                                                                        "bad-payload", env.hash)
        # Every later edit of every honest author still arrives, sync after sync.
        for round_ in range(3):
            fill(alice, f"later-{round_}", 1, space)
            assert (await sync_once(alice, relay.url)).synced
            again = await sync_once(bob, relay.url)
            assert again.synced and again.ok, again.closed
            assert bob.version_vector(space)[alice.device_id] == SHARED + 3 + round_
        assert len(bob.quarantined()) == 1 and len(bob.rejections()) == 1
        await check("live-devices-at-the-end")


async def test_cli_put_sync_status_with_a_poisoned_space(tmp_path: Path,
                                                         open_replica: ReplicaFactory) -> None:
    """The same, with ``crdt-sync`` processes for the devices and the relay."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ra, rb = open_replica(a), open_replica(b)  # members of a's space: they hold its keys
    stranger = open_replica("stranger", seal_interval=0)  # a writer of it, gone bad
    space, bad = share(ra, rb, stranger, rights="write"), stranger.device_id
    async with relay_process(tmp_path / "relay") as relay:
        assert (await sync_once(ra, relay.url)).synced  # the space's genesis and grants
        for device in (ra, rb):
            device.close()  # the commands open the data directories themselves
        await push_poison(relay.url, stranger, space)
        code, _, err = await run_cli("put", "--data", a, space, "equipment", "pump-1", "status=ok")
        assert code == 0, err
        code, _, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", a)
        assert code == 0, err
        code, out, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", b, space)
        assert code == 0, err  # was: exit 5, "rejected, nothing changed"
        synced = json.loads(out)
        assert synced["synced"] is True
        assert [(q["author"], q["reason"], q["by"]) for q in synced["quarantined"]] == [
            (bad, "bad-payload", "this device")]
        code, out, err = await run_cli("get", "--json", "--data", b, space, "equipment", "pump-1")
        assert code == 0 and json.loads(out) == {"status": "ok"}, err

        code, out, err = await run_cli("status", "--json", "--data", b)
        assert code == 0, err
        [entry] = json.loads(out)["quarantined"]
        assert (entry["space"], entry["author"], entry["from_seq"], entry["reason"]) == (
            space, bad, 1, "bad-payload")
        assert entry["since"].endswith("Z")
        code, out, err = await run_cli("status", "--data", b)
        # (the 33-character space id narrows the table's other columns: the reason may wrap)
        assert code == 0 and "quarantined authors" in out and "bad-payloa" in out, err

        # A later edit still arrives.
        code, _, err = await run_cli("put", "--data", a, space, "equipment", "pump-2", "status=late")
        assert code == 0, err
        assert (await run_cli("sync", "--relay", relay.url, "--data", a))[0] == 0
        code, out, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", b)
        assert code == 0 and json.loads(out)["quarantined"] == [], err  # skipped, not refused again
        code, out, err = await run_cli("get", "--json", "--data", b, space, "equipment", "pump-2")
        assert code == 0 and json.loads(out) == {"status": "late"}, err

        # Lift: the envelope is judged again; it is still bad, so the next sync sets it aside again.
        code, out, err = await run_cli("quarantine", "list", "--json", "--data", b)
        assert code == 0 and [q["author"] for q in json.loads(out)["quarantined"]] == [bad], err
        code, out, err = await run_cli("quarantine", "lift", space, bad, "--json", "--data", b)
        assert code == 0 and json.loads(out)["lifted"] is True, err
        code, out, err = await run_cli("quarantine", "list", "--json", "--data", b)
        assert code == 0 and json.loads(out)["quarantined"] == [], err
        code, out, err = await run_cli("sync", "--json", "--relay", relay.url, "--data", b)
        assert code == 0 and [q["author"] for q in json.loads(out)["quarantined"]] == [bad], err
        code, _, err = await run_cli("quarantine", "lift", space, "nobody", "--json", "--data", a)
        assert code == 3 and json.loads(err)["error"]["kind"] == "not-found"
