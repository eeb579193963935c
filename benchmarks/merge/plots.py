"""PNG plots of a merge benchmark run (matplotlib, the bench extra; skipped without it).

- ``field.png``: apply time, merge time and state size against the field-team workload's size;
- ``catchup-<trace>.png``: catch-up bytes and time against k, per sequential trace;
- ``traces.png``: apply time and state size per engine on each trace.

Log scales throughout: engines differ by orders of magnitude.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 90  # keeps each PNG well under 200 KB, small enough to commit


def write_plots(results: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    """The plots written, and why some were not (None if all were)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'crdt-sync[bench]')"
    labels = {name: e["label"] for name, e in results["engines"].items()}
    workloads = results["workloads"]
    written: list[Path] = []
    field = sorted((w for w in workloads if w["kind"] == "field"), key=lambda w: w["txns"])
    if field:
        written.append(_field(plt, field, labels, out / "field.png"))
    for w in workloads:
        if w["kind"] == "sequential" and any(r.get("catchup") for r in w["runs"].values()):
            written.append(_catchup(plt, w, labels, out / f"catchup-{w['name']}.png"))
    traces = [w for w in workloads if w["kind"] != "field"]
    if traces:
        written.append(_traces(plt, traces, labels, out / "traces.png"))
    return written, None


def _ok_runs(w: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e: r for e, r in w["runs"].items() if r["status"] == "ok"}


def _field(plt: Any, field: list[dict[str, Any]], labels: dict[str, str], path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    engines = list(dict.fromkeys(e for w in field for e in _ok_runs(w)))
    sizes = [w["txns"] for w in field]
    for key, ax, title in (("apply_s", axes[0], "apply (s)"), ("merge_s", axes[1], "merge everyone (s)"),
                           ("state_bytes", axes[2], "state (bytes)")):
        for engine in engines:
            points = [(w["txns"], _ok_runs(w)[engine][key]) for w in field if engine in _ok_runs(w)]
            ax.plot(*zip(*points, strict=True), marker="o", label=labels.get(engine, engine))
        ax.set(xscale="log", yscale="log", title=title, xlabel="transactions in the workload")
        ax.set_xticks(sizes, [f"{s:,}" for s in sizes])  # the sizes run, not log decades
        ax.minorticks_off()
        ax.grid(True, which="both", alpha=0.3)
    _legend(axes[0])
    fig.suptitle("field-team workload: time and size against workload size")
    return _save(plt, fig, path)


def _catchup(plt: Any, w: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for engine, run in _ok_runs(w).items():
        ks = sorted(int(k) for k in run.get("catchup", {}))
        if not ks:
            continue
        cu = run["catchup"]
        axes[0].plot(ks, [cu[str(k)]["bytes"] for k in ks], marker="o", label=labels.get(engine, engine))
        axes[1].plot(ks, [cu[str(k)]["seconds"] for k in ks], marker="o", label=labels.get(engine, engine))
    for ax, title in ((axes[0], "bytes on the wire"), (axes[1], "time (s)")):
        ax.set(xscale="log", yscale="log", title=title, xlabel="k: edits behind")
        ax.grid(True, which="both", alpha=0.3)
    _legend(axes[0])
    fig.suptitle(f"{w['name']}: catching up a replica k edits behind")
    return _save(plt, fig, path)


def _traces(plt: Any, traces: list[dict[str, Any]], labels: dict[str, str], path: Path) -> Path:
    engines = list(dict.fromkeys(e for w in traces for e in _ok_runs(w)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    width = 0.8 / max(1, len(engines))
    for key, ax, title in (("apply_s", axes[0], "apply (s)"), ("state_bytes", axes[1], "state (bytes)")):
        for i, engine in enumerate(engines):
            xs = [j + i * width for j, w in enumerate(traces) if engine in _ok_runs(w)]
            ys = [_ok_runs(w)[engine][key] for w in traces if engine in _ok_runs(w)]
            ax.bar(xs, ys, width, label=labels.get(engine, engine))
        ticks = [j + 0.4 - width / 2 for j in range(len(traces))]
        ax.set_xticks(ticks, [w["name"] for w in traces], fontsize=8)
        ax.set(yscale="log", title=title)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    _legend(axes[0])
    fig.suptitle("editing traces: apply time and state size per engine")
    return _save(plt, fig, path)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing to label when no engine ran
        ax.legend(fontsize=8)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
