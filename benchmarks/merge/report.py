"""The merge benchmark's output: terminal tables (rich), ``results.json``, ``report.md``, plots.

Every table is built once as rows of strings and printed both ways, so the terminal and the
Markdown report cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .._harness import Target, print_table, print_targets

BASELINES = ("pycrdt", "yjs")
#: The issue's targets for crdt-sync.
TARGET_TRACE, TARGET_RATIO, TARGET_CATCHUP_BYTES = "seq-automerge-paper", 1.3, 399
Table = tuple[str, list[str], list[list[str]]]  # title, headers, rows


# -- formatting ----------------------------------------------------------------------------
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_b(size: float | None) -> str:
    if size is None:
        return "-"
    for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def fmt_x(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def _ok(w: dict[str, Any], engine: str) -> dict[str, Any] | None:
    run = w["runs"].get(engine)
    return run if run is not None and run["status"] == "ok" else None


def _get(w: dict[str, Any], engine: str, key: str) -> float | None:
    run = _ok(w, engine)
    return None if run is None else run.get(key)


# -- tables --------------------------------------------------------------------------------
MERGE_MEANS = {"sequential": "a new replica merging the whole document",
               "concurrent": "merges while replaying, in total",
               "field": "every device merging every other's edits, in total"}


def _describe(w: dict[str, Any]) -> str:
    if w["kind"] == "sequential":
        return f"{w['txns']:,} edits, one transaction each"
    if w["kind"] == "concurrent":
        return f"{w['txns']:,} transactions of {w['agents']} agents, {w['merges']:,} of them merges"
    return (f"{w['devices']} devices, {w['entities']:,} assets, {w['rounds']} rounds of {w['edits']:,} "
            f"offline edits per device ({w['txns']:,} transactions)")


def workload_table(w: dict[str, Any], labels: dict[str, str]) -> Table:
    headers = ["engine", "apply", "x pycrdt", "x Yjs", "merge", "state", "load", "peak RSS MB"]
    rows = []
    for engine, run in w["runs"].items():
        if run["status"] != "ok":
            rows.append([labels.get(engine, engine), run["status"], *["-"] * 5, _short(run.get("reason"))])
            continue
        rows.append([labels.get(engine, engine), fmt_s(run["apply_s"]),
                     fmt_x(run["apply_s"], _get(w, "pycrdt", "apply_s")),
                     fmt_x(run["apply_s"], _get(w, "yjs", "apply_s")),
                     fmt_s(run.get("merge_s")), fmt_b(run["state_bytes"]), fmt_s(run["load_s"]),
                     f"{run['rss_apply_mb']:.0f} (base {run['rss_base_mb']:.0f})"])
    return f"{w['name']}: {_describe(w)}; merge = {MERGE_MEANS[w['kind']]}", headers, rows


def error_line(reason: str | None) -> str:
    """The line of a child's stderr that says what went wrong (Python's last line, Node's
    ``Error: ...`` line above its stack)."""
    lines = [ln for ln in (reason or "").splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^\w*(Error|Exception)\b", line):
            return line
    return lines[-1] if lines else ""


def _short(reason: str | None) -> str:
    return error_line(reason)[:90]


def catchup_table(w: dict[str, Any], labels: dict[str, str]) -> Table | None:
    ks = sorted({int(k) for run in w["runs"].values() for k in run.get("catchup", {})})
    if not ks:
        return None
    rows = []
    for engine in w["runs"]:
        run = _ok(w, engine)
        if run is None:
            continue
        cells = []
        for k in ks:
            cu = run["catchup"].get(str(k))
            cells.append("-" if cu is None else f"{fmt_b(cu['bytes'])} / {fmt_s(cu['seconds'])}")
        rows.append([labels.get(engine, engine), *cells])
    return (f"{w['name']}: catch-up, bytes on the wire / time, for a replica k edits behind",
            ["engine", *[f"k = {k:,}" for k in ks]], rows)


def ratio_table(workloads: list[dict[str, Any]]) -> Table:
    """crdt-sync against raw pycrdt and against Yjs, on every workload both ran."""
    headers = ["workload", "vs", "apply", "merge", "state", "load", "catch-up k=1 bytes"]
    rows = []
    for w in workloads:
        for base in BASELINES:
            if _ok(w, "ours") is None or _ok(w, base) is None:
                continue
            ours_cu = w["runs"]["ours"].get("catchup", {}).get("1")
            base_cu = w["runs"][base].get("catchup", {}).get("1")
            rows.append([w["name"], "raw pycrdt" if base == "pycrdt" else "Yjs",
                         *[fmt_x(_get(w, "ours", k), _get(w, base, k))
                           for k in ("apply_s", "merge_s", "state_bytes", "load_s")],
                         fmt_x(ours_cu and ours_cu["bytes"], base_cu and base_cu["bytes"])])
    title = "crdt-sync (full write path) relative to the baselines (above 1: crdt-sync costs more)"
    return title, headers, rows


def targets(workloads: list[dict[str, Any]]) -> tuple[list[Target], list[str]]:
    """The issue's targets, and why one could not be measured."""
    out, missing = [], []
    paper = next((w for w in workloads if w["name"] == TARGET_TRACE), None)
    if paper is not None and _ok(paper, "ours") and _ok(paper, "pycrdt"):
        ratio = paper["runs"]["ours"]["apply_s"] / paper["runs"]["pycrdt"]["apply_s"]
        out.append(Target(f"crdt-sync apply time / raw pycrdt on {TARGET_TRACE}", ratio, TARGET_RATIO, "x"))
    else:
        missing.append(f"apply-time target: needs {TARGET_TRACE} run by ours and pycrdt (--trace)")
    seqs = [w for w in workloads if w["kind"] == "sequential" and _ok(w, "ours")
            and "1" in w["runs"]["ours"].get("catchup", {})]
    seqs.sort(key=lambda w: w["name"] != TARGET_TRACE)
    if seqs:
        one = seqs[0]["runs"]["ours"]["catchup"]["1"]["bytes"]
        out.append(Target(f"crdt-sync catch-up of one edit on {seqs[0]['name']}, bytes on the wire",
                          one, TARGET_CATCHUP_BYTES, "B"))
    else:
        missing.append("catch-up target: needs a sequential trace (--trace) run by ours")
    return out, missing


def all_tables(results: dict[str, Any]) -> list[Table]:
    labels = {name: e["label"] for name, e in results["engines"].items()}
    tables: list[Table] = []
    for w in results["workloads"]:
        tables.append(workload_table(w, labels))
        cu = catchup_table(w, labels)
        if cu is not None:
            tables.append(cu)
    tables.append(ratio_table(results["workloads"]))
    return tables


# -- writing -------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    align = ["---"] + ["---:"] * (len(headers) - 1)
    return "\n".join([line(headers), "| " + " | ".join(align) + " |", *(line(r) for r in rows)])


NOTES = """\
How to read it:

- **apply**: the workload's local transactions (for crdt-sync: journal, sealing into signed
  envelopes, SQLite), timed in the engine's process, nothing else; **merge**: see each table's
  title; **state**: the engine's encoded document (Yjs and pycrdt: the update of the whole
  document; Loro: a snapshot; Automerge: `save()`; crdt-sync: the bundle of signed envelopes a
  new device imports); **load**: decoding that state into a new replica and reading the content
  back (crdt-sync: reopening the data directory after `close()`, whose sealing and compaction
  time is `close_s` in results.json); **peak RSS**: the child
  process's high-water mark while replaying (Node's baseline is higher than Python's: see base).
- **catch-up**: a second replica syncs at `sum(k)` edits from the end, then catches up after
  each window of k edits, the last window ending the trace, through the engine's own sync:
  Yjs, pycrdt, y-py: state vector, then the missing update; Loro: version vector, then
  `export(Updates)`; Automerge: its sync protocol, with sync states kept between syncs;
  crdt-sync: two in-process sync sessions, bytes after the handshake (HAVE, ENVELOPES, ACK,
  BYE both ways; the handshake is in results.json). No transport framing anywhere.
- Concurrent traces: every engine that ran one replayed it by exchanging its own updates
  between per-agent replicas (the agents' fork points are version vectors). Yjs-based
  engines order concurrent inserts at one position by client id, and the traces' endContent
  has agent 0's first, so client ids follow agent numbers (Automerge and Loro reach it with
  ids in either order).
- Every engine's final content is checked (text against the trace's `endContent`; field-team
  assets: all devices equal, each field one of the values written to it concurrently).
"""


def to_markdown(results: dict[str, Any], tables: list[Table], plots: list[Path],
                level: int = 2) -> str:
    h = "#" * level
    m = results["machine"]
    parts = [f"{h} Merge benchmark runner", "",
             f"Command: `{results['command']}` ({results['seconds'] / 60:.1f} minutes, "
             f"{results['started']}).", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; "
             f"Python {m['python']}, SQLite {m['sqlite']}.", "",
             "Engines: " + "; ".join(f"{e['label']} ({e['status']})" for e in results["engines"].values())
             + ". Versions: " + _versions(results) + ".", ""]
    found, missing = targets(results["workloads"])
    for t in found:
        parts.append(f"- Target: {t.name}: **{t.value:.3g} {t.unit}** (limit {t.limit:g} {t.unit}): "
                     f"{'met' if t.met else '**not met**'}")
    parts += [f"- {m_}" for m_ in missing] + [""]
    for title, headers, rows in tables:
        parts += [f"{h}# {title}", "", markdown_table(headers, rows), ""]
    parts += [NOTES]
    for plot in plots:
        parts += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(parts)


def _versions(results: dict[str, Any]) -> str:
    seen: dict[str, str] = {}
    for w in results["workloads"]:
        for engine, run in w["runs"].items():
            if run.get("version"):
                seen.setdefault(engine, run["version"])
    return ", ".join(f"{e} {v}" for e, v in seen.items()) or "-"


def write_all(results: dict[str, Any], out: Path, console: Console) -> None:
    """Print the tables and write results.json, report.md and the plots into ``out``."""
    from .plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    plots, plot_note = write_plots(results, out)
    tables = all_tables(results)
    (out / "report.md").write_text(to_markdown(results, tables, plots), encoding="utf-8")
    for title, headers, rows in tables:
        print_table(console, title, headers, rows)
    found, missing = targets(results["workloads"])
    print_targets(console, found)
    for m in missing + ([plot_note] if plot_note else []):
        console.print(f"[dim]{m}[/dim]")
    console.print(f"results: {out / 'results.json'}, {out / 'report.md'}"
                  + (f", {len(plots)} plots" if plots else ""))
