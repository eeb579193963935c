"""The merge benchmark runner, end to end on tiny workloads, for every installed engine.

The runner checks each engine's final content itself (and fails the run if one is wrong);
these tests check that it does, on a sequential trace with non-ASCII text (so the index
conversions for UTF-8 and UTF-16 engines are exercised), a concurrent trace with a merge,
and a small generated field-team workload.

Node engines run when Node.js is on PATH: the first run installs them with npm into
``.bench-node/`` (a few seconds, once); where npm cannot, they are skipped with the reason.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from crdt_sync.benchmarks.merge import _flat, concurrent, field, nodejs, runner
from crdt_sync.benchmarks.merge.driver import catchup_windows
from crdt_sync.benchmarks.merge.engines import ENGINES

pytestmark = pytest.mark.slow

SEQ_END = "😀 Grüß dich, Welt?"
SEQUENTIAL = {"startContent": "", "endContent": SEQ_END, "txns": [
    {"patches": [[0, 0, "Hello world"]]},
    {"patches": [[5, 0, ","]]},
    {"patches": [[12, 0, "!"]]},
    {"patches": [[7, 5, "Welt"]]},
    {"patches": [[0, 0, "😀 "]]},
    {"patches": [[2, 5, "Grüß"], [6, 0, " dich"]]},  # two patches in one transaction
    {"patches": [[17, 1, "?"]]},
]}
# Agent 1 edits a branch concurrent with agent 0's, then merges both (txn 3).
CONC_END = "yoooo! ho ho\n"
CONCURRENT = {"kind": "concurrent", "endContent": CONC_END, "numAgents": 2, "txns": [
    {"parents": [], "agent": 0, "patches": [[0, 0, "hi there\n"]]},
    {"parents": [0], "agent": 0, "patches": [[0, 8, ""], [0, 0, "yoooo"]]},
    {"parents": [0], "agent": 1, "patches": [[8, 0, "!"]]},
    {"parents": [1, 2], "agent": 1, "patches": [[6, 0, " ho ho"]]},
    {"parents": [3], "agent": 0, "patches": []},
]}


def write_trace(path: Path, trace: dict[str, Any]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(trace, f)
    return path


def replay(trace: dict[str, Any]) -> str:
    text = str(trace["startContent"])
    for txn in trace["txns"]:
        for pos, deleted, inserted in txn["patches"]:
            text = text[:pos] + inserted + text[pos + deleted:]
    return text


@pytest.fixture(scope="module")
def node_status() -> str | None:
    """None if the Node engines can run, else why not (npm is tried once, if present)."""
    if nodejs.node_binary() is None:
        return "no node on PATH"
    return nodejs.setup(nodejs.DEFAULT_DIR)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, node_status: str | None) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench")
    assert replay(SEQUENTIAL) == SEQ_END
    argv = ["--trace", str(write_trace(tmp / "seq-tiny.json.gz", SEQUENTIAL)),
            "--trace", str(write_trace(tmp / "conc-tiny.json.gz", CONCURRENT)),
            "--field-sizes", "12", "--devices", "3", "--rounds", "2", "--behind", "1,2",
            "--out", str(tmp / "out"), "--no-setup", "--tmpdir", str(tmp)]
    assert runner.main(argv) == 0
    out: dict[str, Any] = json.loads((tmp / "out" / "results.json").read_text())
    out["out_dir"] = tmp / "out"
    return out


@pytest.mark.parametrize("engine", list(ENGINES))
def test_every_installed_engine_ends_on_the_expected_content(results: dict[str, Any], engine: str) -> None:
    status = results["engines"][engine]["status"]
    if status != "ok":
        if engine in ("ours", "pycrdt"):
            pytest.fail(f"{engine} must always run: {status}")
        pytest.skip(f"{engine}: {status}")
    for w in results["workloads"]:
        run = w["runs"][engine]
        # "ok" means the runner compared the engine's final content with the expected one
        assert run["status"] == "ok", (w["name"], run)
        assert run["apply_s"] > 0 and run["state_bytes"] > 0 and run["load_s"] > 0
        assert run["rss_apply_mb"] > 0
    seq = next(w for w in results["workloads"] if w["name"] == "seq-tiny")
    assert sorted(seq["runs"][engine]["catchup"]) == ["1", "2"]
    assert all(cu["bytes"] > 0 for cu in seq["runs"][engine]["catchup"].values())


def test_the_report_is_written(results: dict[str, Any]) -> None:
    out = results["out_dir"]
    report = (out / "report.md").read_text()
    assert "## Merge benchmark runner" in report
    assert "seq-tiny" in report and "conc-tiny" in report and "field-12" in report
    assert "catch-up of one edit" in report
    for png in ("field.png", "traces.png", "catchup-seq-tiny.png"):
        assert (out / png).stat().st_size > 1000


def test_a_wrong_result_fails_the_run(tmp_path: Path) -> None:
    """An endContent the replay cannot reach: every engine's result is refused."""
    bad = dict(CONCURRENT, endContent="something else")
    argv = ["--trace", str(write_trace(tmp_path / "conc-bad.json.gz", bad)), "--field-sizes", "0",
            "--engines", "pycrdt,ours", "--out", str(tmp_path / "out"), "--no-setup"]
    assert runner.main(argv) == 1
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {r["status"] for r in out["workloads"][0]["runs"].values()} == {"wrong"}


def test_a_missing_trace_is_an_error_not_a_crash(tmp_path: Path) -> None:
    assert runner.main(["--trace", str(tmp_path / "nope.json.gz"), "--out", str(tmp_path)]) == 1


# -- the pieces ----------------------------------------------------------------------------
def test_concurrent_schedule_merges_exactly_the_parents() -> None:
    s = concurrent.schedule(CONCURRENT)
    assert (s.agents, s.merges) == (2, 1)
    # txn 2 (agent 1) needs agent 0's txn 0; txn 3 needs agent 0's txn 1; txn 4 agent 1's 2-3
    exports = [j for j in range(s.txns) if s.export[j]]
    assert exports == [0, 1, 3]
    needed = [list(s.merge_segs[(s.merge_ends[j - 1] if j else 0):s.merge_ends[j]]) for j in range(s.txns)]
    assert needed == [[], [], [0], [1], [2]]


def test_a_trace_whose_agent_runs_ahead_of_its_parents_is_refused() -> None:
    broken = dict(CONCURRENT, txns=[*CONCURRENT["txns"][:2],
                                    {"parents": [0], "agent": 0, "patches": [[0, 0, "x"]]}])
    with pytest.raises(ValueError, match="already holds"):
        concurrent.schedule(broken)


def test_positions_convert_to_utf8_and_utf16(tmp_path: Path) -> None:
    from crdt_sync.benchmarks import _trace

    trace = _trace.load_json_trace(write_trace(tmp_path / "t.json.gz", SEQUENTIAL))
    _flat.write_sequential(trace, tmp_path / "flat", "t")
    for unit, encode, size in (("utf8", "utf-8", 1), ("utf16", "utf-16-le", 2)):
        converted = _flat.read_sequential(tmp_path / "flat", unit)
        text = ""
        for patches in converted.patches(0, converted.txns):
            for pos, deleted, inserted in patches:  # surgery on the encoded text
                data = text.encode(encode)
                text = (data[:pos * size] + inserted.encode(encode)
                        + data[(pos + deleted) * size:]).decode(encode)
        assert text == SEQ_END


def test_field_check_accepts_any_concurrent_winner_and_nothing_else() -> None:
    w = field.generate(devices=3, entities=5, rounds=1, edits=20, seed=3)
    allowed = field.candidates(w)
    contested = next((i, f) for i, fields in enumerate(allowed) for f, vs in fields.items() if len(vs) > 1)
    content = {field.asset_id(i): {f: sorted(vs, key=repr)[0][1] for f, vs in fields.items()}
               for i, fields in enumerate(allowed)}
    assert field.check(w, allowed, content) is None
    i, f = contested
    content[field.asset_id(i)][f] = "never written"
    assert "not one of" in (field.check(w, allowed, content) or "")


def test_catchup_windows_fit_the_trace() -> None:
    assert catchup_windows(100, [1, 10, 1000]) == [10, 1]
    assert catchup_windows(5, [1, 2, 3]) == [2, 1]
    assert catchup_windows(1, [1]) == []


def test_the_cli_runs_it(tmp_path: Path) -> None:
    from crdt_sync import cli

    argv = ["bench", "merge", "--field-sizes", "8", "--devices", "2", "--rounds", "1",
            "--engines", "pycrdt,ours", "--out", str(tmp_path / "out"), "--no-setup"]
    assert cli.main(argv) == 0
    runs = json.loads((tmp_path / "out" / "results.json").read_text())["workloads"][0]["runs"]
    assert {r["status"] for r in runs.values()} == {"ok"}
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "merge", "--engines", "nope"])  # options reach the benchmark's parser
    assert exc.value.code == 1
