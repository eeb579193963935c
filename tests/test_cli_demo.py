"""``crdt-sync demo`` as a real process (what ``make demo`` runs): the team joins by invite over
a relay and converges, the contractor's out-of-scope write is refused on her own device, and
after her revocation her edit reaches no one and she cannot read what is written later."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from crdt_sync.cli.demo import INVITES
from tests.helpers import PROC_TIMEOUT, REPO
from tests.test_cli_members import needs_spaces


@needs_spaces
def test_the_demo_shares_converges_and_revokes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRDT_SYNC_DATA"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "crdt_sync.cli", "demo", "--json", "--dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=4 * PROC_TIMEOUT, cwd=REPO)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["converged"] is True and len(set(summary["digests"].values())) == 1
    rights = {m["device"]: m["rights"] for m in summary["members"]}
    assert rights[summary["devices"]["alice"]] == "admin"
    assert rights[summary["devices"]["dana"]] == "write"
    entities = {(e["collection"], e["id"]): e["fields"] for e in summary["entities"]}
    assert entities[("inspections", "I-2")]["result"] == "pass"
    assert ("equipment", "valve-3") not in entities and ("equipment", "valve-9") not in entities
    assert "refused on her own device (out-of-scope)" in "\n".join(summary["steps"])
    steps = "\n".join(summary["steps"])  # the direct meetings: real daemons, LAN and BLE
    assert "bob+carol: they meet over the LAN and converge" in steps, steps
    assert "carol+alice: they meet over BLE and converge" in steps, steps
    if INVITES:  # the team joins by token over the relay
        assert "joins site-42 with its token" in "\n".join(summary["steps"])
    # the contractor is revoked: her later edit reaches no one, she cannot read what follows
    assert set(summary["digests"]) == {"alice", "bob", "carol"}
    assert summary["revoked_edit_reached"] == [] and summary["revoked_reads_new"] is False
    assert ("tasks", "T-2") in entities
    # the human version prints the same story
    done = subprocess.run([sys.executable, "-m", "crdt_sync.cli", "demo"], capture_output=True,
                          text=True, env=env, timeout=4 * PROC_TIMEOUT, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "converged" in done.stdout and "NOT converged" not in done.stdout
    assert "reached no one" in done.stdout
