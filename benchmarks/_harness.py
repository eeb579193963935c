"""Plumbing shared by the benchmarks: child processes, memory and disk, the machine, output.

Every measured engine runs in a child process of its own, so its peak RSS is its own (not
the parent's trace parsing or another engine's leftovers) and no run inherits the heap or
the imports of the one before. A child talks to its parent over stdout in JSON lines that
start with :data:`MARK` (progress ticks, then the result); anything else it prints is ignored.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from time import perf_counter, process_time
from typing import IO, Any, NoReturn, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

MARK = "@bench "
MB = 1024 * 1024


class BenchmarkError(Exception):
    """A benchmark could not produce a trustworthy number (a child failed, a check did not hold)."""


# -- measuring ----------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Reads VmHWM, the high-water mark of this process's own address space. ``ru_maxrss`` is
    no good in a child: Linux carries it over fork and exec, so a child of a parent that
    had parsed a large trace reports the parent's peak as its own.
    """
    peak = _proc_status_kib("VmHWM:")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak / 1024


def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    import psutil  # the "bench" extra; imported here so that only this needs it

    return float(psutil.Process().memory_info().rss) / MB


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def dir_size(path: Path) -> int:
    """Bytes of every regular file under ``path`` (what the data directory costs on disk)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class Stopwatch:
    """Wall time and this process's CPU time since it was made.

    CPU time is the steadier number on a shared machine: other processes stretch the wall
    clock of a CPU-bound run, hardly its CPU time. Waiting on the disk counts only as wall.
    """

    def __init__(self) -> None:
        self._wall, self._cpu = perf_counter(), process_time()

    def read(self) -> tuple[float, float]:
        """``(wall seconds, CPU seconds)`` so far."""
        return perf_counter() - self._wall, process_time() - self._cpu


@contextmanager
def profiled(path: Path | None) -> Iterator[None]:
    """cProfile the block into ``path`` (pstats format) when a path is given."""
    if path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def machine_info() -> dict[str, str]:
    """What a reader needs to compare numbers from another machine."""
    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "ram_gib": f"{_mem_total_kib() / MB:.1f}",
        "python": platform.python_version(),
        "pycrdt": metadata.version("pycrdt"),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        # other work on the machine stretches every time measured: say how busy it was
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- child processes ----------------------------------------------------------------------
class ChildChannel:
    """The child's side of the protocol: progress ticks, then the result (in one or more parts)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout

    def progress(self, done: int) -> None:
        self._send({"progress": done})

    def result(self, payload: Mapping[str, Any]) -> None:
        self._send({"result": dict(payload)})

    def done(self) -> None:
        """A command from the parent is done (see :meth:`Child.step`)."""
        self._send({"done": True})

    def _send(self, message: dict[str, Any]) -> None:
        self._out.write(MARK + json.dumps(message) + "\n")
        self._out.flush()


@contextmanager
def progress_display(console: Console) -> Iterator[Progress]:
    """A progress display for child runs (on the console given, stderr in practice)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield progress


#: Key set in a result when :func:`run_child` stopped the child after its ``grace`` ran out.
CUT_SHORT = "cut_short"


def run_child(module: str, args: Sequence[str], *, description: str, total: int,
              progress: Progress, grace: float | None = None,
              source: Path | None = None) -> dict[str, Any]:
    """Run ``python -m module --child ...args`` and return the result it reported.

    A child may report its result in parts (later parts update earlier ones). With
    ``grace``, a child still running ``grace`` seconds after its first part is killed and
    the parts so far are returned with :data:`CUT_SHORT` set: so that a step measured after
    the main one (a slow ``close()``, say) can be bounded without losing the main number.

    Raises:
        BenchmarkError: the child failed or reported no result; its stderr is quoted.
    """
    task = progress.add_task(description, total=total)
    try:
        return Child(module, args, description, source).finish(progress, task, grace)
    finally:
        progress.remove_task(task)


class Child:
    """A benchmark child process (``python -m module --child ...args``).

    :meth:`step` sends it one command line and waits for its ``done`` (children that take
    turns); :meth:`finish` reads its result as :func:`run_child` does. With ``source`` (a
    source tree of another build of crdt-sync), the child imports ``crdt_sync`` from there:
    two builds side by side in one run.
    """

    def __init__(self, module: str, args: Sequence[str], description: str,
                 source: Path | None = None) -> None:
        self.description = description
        self._cmd = [sys.executable, "-m", module, *args]
        env = None
        if source is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                [str(source), *filter(None, [os.environ.get("PYTHONPATH")])])}
        # stderr goes to a file, not a pipe: a chatty child must not block on a full pipe
        # while we read its stdout.
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in finish or _fail)
        self._proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=self._err, text=True, env=env, cwd=source)

    def step(self, command: str) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._fail("the child exited")
        for line in self._proc.stdout:
            if line.startswith(MARK) and "done" in json.loads(line[len(MARK):]):
                return
        self._fail(f"the child exited during {command!r}")

    def finish(self, progress: Progress | None = None, task: TaskID | None = None,
               grace: float | None = None) -> dict[str, Any]:
        """Read the child's result until it exits (see :func:`run_child` for ``grace``)."""
        proc = self._proc
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdin.close()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            proc.kill()

        timer = threading.Timer(grace or 0.0, expire)
        try:
            result = _read_messages(proc.stdout, progress, task,
                                    on_first_result=timer.start if grace is not None else None)
            code = proc.wait()
        finally:
            timer.cancel()
            proc.stdout.close()
        if result is not None and expired.is_set() and code != 0:
            self._err.close()
            return result | {CUT_SHORT: True}
        if code != 0 or result is None:
            self._fail(f"child exited with {code}" + (" without a result" if result is None else ""))
        self._err.close()
        return result

    def _fail(self, what: str) -> NoReturn:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._err.seek(0)
        stderr = self._err.read()
        self._err.close()
        raise BenchmarkError(f"{self.description}: {what}\n{' '.join(self._cmd)}\n{stderr[-4000:]}")


def _read_messages(stream: IO[str], progress: Progress | None, task: TaskID | None,
                   on_first_result: Callable[[], None] | None) -> dict[str, Any] | None:
    result: dict[str, Any] | None = None
    for line in stream:
        if not line.startswith(MARK):
            continue
        message = json.loads(line[len(MARK):])
        if "progress" in message:
            if progress is not None and task is not None:
                progress.update(task, completed=message["progress"])
        elif "result" in message:
            if result is None and on_first_result is not None:
                on_first_result()
            result = (result or {}) | message["result"]
    return result


def chunks(total: int, parts: int = 100) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` ranges covering ``range(total)``: the child reports progress between them,
    so the timed inner loop carries no progress check of its own."""
    step = max(1, -(-total // parts))
    for lo in range(0, total, step):
        yield lo, min(total, lo + step)


# -- output -------------------------------------------------------------------------------
def make_console(stderr: bool = False) -> Console:
    """A console whose tables are not squeezed to 80 columns when output goes to a file."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 140)


@dataclass(frozen=True, slots=True)
class Target:
    """A goal from the issue: ``value`` must not exceed ``limit``."""

    name: str
    value: float
    limit: float
    unit: str

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "limit": self.limit, "unit": self.unit,
                "met": self.met}


def print_table(console: Console, title: str, headers: Sequence[str],
                rows: Sequence[Sequence[str]]) -> None:
    """A table whose first column is a label and the others right-aligned numbers."""
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_targets(console: Console, targets: Sequence[Target]) -> None:
    for t in targets:
        verdict = "[green]met[/green]" if t.met else "[red]NOT met[/red]"
        console.print(f"target {t.name}: {t.value:.3g} {t.unit} (limit {t.limit:g} {t.unit}): {verdict}")


def print_machine(console: Console) -> None:
    m = machine_info()
    console.print(f"[dim]{m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; Python {m['python']}, "
                  f"pycrdt {m['pycrdt']}, SQLite {m['sqlite']}; load average {m['load_average']} "
                  f"(1, 5, 15 min)[/dim]")


def print_json(payload: Mapping[str, Any]) -> None:
    """Machine-readable output: the only thing written to stdout in ``--json`` mode."""
    print(json.dumps({**payload, "machine": machine_info()}, indent=2))


def share(admin: Any, *others: Any, name: str, rights: str = "write") -> str:
    """One space that ``admin`` (a :class:`crdt_sync.Replica`) creates and every replica of
    ``others`` holds (granted ``rights``, received by bundle): its id. The benchmarks' way to
    give several devices a common space, as tests/helpers.share is the tests'."""
    space: str = admin.space(name).id
    if others:
        admin.grant(space, [o.device_id for o in others], rights)
        bundle = admin.export_bundle(space)
        for other in others:
            other.import_bundle(bundle)
    return space
