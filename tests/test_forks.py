"""Forks (issue 11, finding 2): two signed envelopes of one author at one (space, seq).

Reproduced first: one branch sent to the real relay, the other carried in a bundle, left two
devices with different data, both reporting "synced" (HAVE carried seq numbers only). Now
HAVE carries head hashes, the two envelopes are a proof that travels (FORK_PROOF, bundles),
and every device the proof reaches sets the author aside from the fork seq (both branches)
and rebuilds what those envelopes touched, so honest devices converge whichever branch each
saw first. Real parts: the in-process relay on loopback, SQLite data directories, and the
``crdt-sync`` CLI for status.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from crdt_sync import Replica
from tests.conftest import ReplicaFactory
from tests.helpers import share
from tests.relay_helpers import CLI, PROC_WAIT, run_cli, running_relay, sync_once
from tests.sync_helpers import snapshot

PUMP = ("eq", "pump")


#: The space of the tests: made by the ``site`` device, which lets Mallory and the others in.
SPACE_NAME = "site-42"


def pump(replica: Replica) -> dict[str, object]:
    return replica.space(SPACE_NAME).get(*PUMP)


def edit(replica: Replica, fields: dict[str, object]) -> None:
    replica.space(SPACE_NAME).put(*PUMP, fields)  # merges the fields


class Forked:
    """Mallory's key in two data directories (a copied device) after a common seq 1, in a
    space the ``site`` device made and let Mallory and ``members`` write (``SHARED``
    envelopes of the site's chain, which every one of them holds)."""

    def __init__(self, root: Path, open_replica: ReplicaFactory, *members: Replica) -> None:
        self.root = root
        self.open = open_replica
        self.site = open_replica("site", seal_interval=0)
        self.mallory = open_replica("mallory", seal_interval=0)
        self.space = share(self.site, self.mallory, *members, name=SPACE_NAME, rights="write")
        self.mallory.space(self.space).put(*PUMP, {"status": "ok", "by": "mallory"})
        self.mallory.seal()

    def clone(self) -> Replica:
        """A copy of Mallory's directory as it is now (its device seed with it)."""
        self.mallory.close()
        shutil.copytree(self.root / "mallory", self.root / "clone")
        self.mallory = Replica(self.root / "mallory", seal_interval=0)
        return Replica(self.root / "clone", seal_interval=0)


async def test_a_fork_through_the_relay_and_a_bundle_is_proven_and_converges(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    async with running_relay(tmp_path / "relay") as relay:
        alice, bob, carol = (open_replica(n, seal_interval=0) for n in ("alice", "bob", "carol"))
        world = Forked(tmp_path, open_replica, alice, bob, carol)
        SPACE = world.space
        # seq 1, common to both branches (with the site's SHARED envelopes, which it holds)
        assert (await sync_once(world.mallory, relay.url)).synced
        for device in (alice, bob):
            assert (await sync_once(device, relay.url)).synced
        edit(alice, {"note": "from alice"})
        assert (await sync_once(alice, relay.url)).synced
        clone = world.clone()

        # The two branches of Mallory's seq 2: one to the relay, one in a bundle to Bob.
        edit(world.mallory, {"status": "relay branch"})
        assert (await sync_once(world.mallory, relay.url)).synced
        edit(clone, {"status": "bundle branch"})
        bob.import_bundle(clone.export_bundle(SPACE), source="usb-stick")
        assert pump(bob)["status"] == "bundle branch"
        assert (await sync_once(carol, relay.url)).synced
        assert pump(carol)["status"] == "relay branch"  # Carol saw the relay's branch first

        # Bob meets the relay: the head hashes of Mallory's seq 2 differ, at once.
        outcome = await sync_once(bob, relay.url)
        assert outcome.synced and outcome.ok, outcome.closed
        assert pump(bob)["status"] == "ok"  # before: "bundle branch", and "synced" all the same
        m = world.mallory.device_id
        for side in (bob.fork_proofs(SPACE), relay.store.fork_proofs(SPACE)):
            assert len(side) == 1  # detected on both sides of the session
        status = bob.status().spaces[SPACE]
        assert [(f.author, f.seq, f.liftable) for f in status.forks] == [(m, 2, False)]
        assert status.version_vector[m] == 1

        # Alice, who saw the relay's branch, gets the proof from the relay.
        assert (await sync_once(alice, relay.url)).synced
        assert alice.fork_proofs(SPACE) == bob.fork_proofs(SPACE)
        # Carol, a third device that held the relay's branch, too.
        assert (await sync_once(carol, relay.url)).synced
        assert carol.fork_proofs(SPACE) == bob.fork_proofs(SPACE)

        # Both branches are gone everywhere; the common seq 1 and Alice's edit stay.
        expected = {"status": "ok", "by": "mallory", "note": "from alice"}
        for device in (alice, bob, carol):
            assert pump(device) == expected
            assert device.version_vector(SPACE)[m] == 1
        assert snapshot(alice, SPACE).key() == snapshot(bob, SPACE).key() == snapshot(carol, SPACE).key()
        assert relay.store.version_vector(SPACE)[m] == 1

        # Mallory's later envelopes (either branch) are refused everywhere, the rest syncs.
        edit(world.mallory, {"status": "later"})
        await sync_once(world.mallory, relay.url)
        assert relay.store.version_vector(SPACE)[m] == 1
        edit(bob, {"note": "from bob"})
        assert (await sync_once(bob, relay.url)).synced
        assert (await sync_once(alice, relay.url)).synced
        assert pump(alice)["note"] == "from bob" and pump(alice)["status"] == "ok"
        clone.close()


async def test_a_bundle_carries_the_proof_to_a_device_that_never_met_the_relay(
        tmp_path: Path, open_replica: ReplicaFactory) -> None:
    dave, erin = open_replica("dave", seal_interval=0), open_replica("erin", seal_interval=0)
    world = Forked(tmp_path, open_replica, dave, erin)
    SPACE = world.space
    erin.import_bundle(world.mallory.export_bundle(SPACE))
    clone = world.clone()
    edit(world.mallory, {"status": "one"})
    edit(clone, {"status": "other"})
    dave.import_bundle(world.mallory.export_bundle(SPACE))
    dave.import_bundle(clone.export_bundle(SPACE))  # the fork, found on receipt
    assert len(dave.fork_proofs(SPACE)) == 1
    assert pump(dave)["status"] == "ok"
    erin.import_bundle(dave.export_bundle(SPACE))  # the proof rides in Dave's bundle
    assert erin.fork_proofs(SPACE) == dave.fork_proofs(SPACE)
    # Erin now refuses both branches, whichever comes.
    erin.import_bundle(clone.export_bundle(SPACE))
    erin.import_bundle(world.mallory.export_bundle(SPACE))
    assert snapshot(erin, SPACE).key() == snapshot(dave, SPACE).key()
    assert pump(erin) == {"status": "ok", "by": "mallory"}
    clone.close()


def test_status_shows_the_fork_and_says_it_cannot_be_lifted(tmp_path: Path,
                                                            open_replica: ReplicaFactory) -> None:
    frank = open_replica("frank")
    world = Forked(tmp_path, open_replica, frank)
    SPACE = world.space
    clone = world.clone()
    edit(world.mallory, {"status": "one"})
    edit(clone, {"status": "other"})
    with frank:
        frank.import_bundle(world.mallory.export_bundle(SPACE))
        frank.import_bundle(clone.export_bundle(SPACE))
    clone.close()
    run = subprocess.run([CLI, "--data", str(tmp_path / "frank"), "status", "--json"],
                         capture_output=True, text=True, timeout=PROC_WAIT)
    assert run.returncode == 0, run.stderr
    [fork] = json.loads(run.stdout)["spaces"][SPACE]["forks"]
    assert (fork["author"], fork["seq"], fork["reason"], fork["liftable"]) == (
        world.mallory.device_id, 2, "fork", False)
    assert len(fork["hashes"]) == 2 and fork["source"] == "bundle"
    human = subprocess.run([CLI, "--data", str(tmp_path / "frank"), "status"],
                           capture_output=True, text=True, timeout=PROC_WAIT)
    assert human.returncode == 0 and "not liftable" in human.stdout, human.stdout + human.stderr


@pytest.fixture(autouse=True)
def _cli_exists() -> None:
    assert Path(CLI).exists()


async def test_the_fork_through_real_cli_processes(tmp_path: Path, open_replica: ReplicaFactory) -> None:
    """Honest devices as ``crdt-sync`` processes: import the bundle, sync with the relay,
    and status shows the fork on both; their data is the same."""
    async with running_relay(tmp_path / "relay") as relay:
        bob, alice = str(tmp_path / "bob"), str(tmp_path / "alice")
        members = [Replica(data) for data in (bob, alice)]  # members: they hold the space's keys
        world = Forked(tmp_path, open_replica, *members)
        SPACE = world.space
        for member in members:
            member.close()
        assert (await sync_once(world.mallory, relay.url)).synced
        for data in (bob, alice):
            code, out, err = await run_cli("--data", data, "sync", "--relay", relay.url, SPACE, "--json")
            assert code == 0 and json.loads(out)["synced"] is True, err
        clone = world.clone()
        edit(world.mallory, {"status": "relay branch"})
        assert (await sync_once(world.mallory, relay.url)).synced
        edit(clone, {"status": "bundle branch"})
        bundle = tmp_path / "branch.bundle"
        bundle.write_bytes(clone.export_bundle(SPACE))
        clone.close()
        code, out, err = await run_cli("--data", bob, "import", str(bundle), "--json")
        assert code == 0 and json.loads(out)["forks"] == 0, err  # one branch: no fork yet
        code, out, err = await run_cli("--data", bob, "sync", "--relay", relay.url, "--json")
        assert code == 0 and json.loads(out)["synced"] is True, err
        code, out, err = await run_cli("--data", alice, "sync", "--relay", relay.url, "--json")
        assert code == 0, err
        pumps = []
        for data in (bob, alice):
            code, out, err = await run_cli("--data", data, "status", "--json")
            assert code == 0, err
            [fork] = json.loads(out)["spaces"][SPACE]["forks"]
            assert (fork["author"], fork["seq"], fork["liftable"]) == (world.mallory.device_id, 2, False)
            code, out, err = await run_cli("--data", data, "get", SPACE, *PUMP, "--json")
            assert code == 0, err
            pumps.append(json.loads(out))
        assert pumps[0] == pumps[1] and pumps[0]["status"] == "ok", pumps
        # The bundle again, now that Bob holds the proof: nothing of the branch comes back.
        code, out, err = await run_cli("--data", bob, "import", str(bundle), "--json")
        assert code == 0 and json.loads(out)["applied"] == 0, err
