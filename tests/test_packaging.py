"""What `pip install crdt-sync` installs: one top-level name, `crdt_sync`, with the linked
folders inside it and the Node driver's files as package data (`crdt-sync bench merge`
runs them from the installed copy). Built offline from a copy of the source tree: a real
wheel (`pip wheel --no-deps --no-build-isolation --no-index`) where the venv's setuptools
can build one, else setuptools' `build_py`, which selects the same files for the wheel."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NODE = REPO / "benchmarks" / "merge" / "node"
LINKED = ("transports", "relay", "benchmarks")

pytestmark = pytest.mark.slow


def _can_build_wheels() -> bool:
    """setuptools builds wheels itself from 70.1; before that it needs the `wheel` package."""
    parts = tuple(int(p) for p in version("setuptools").split(".")[:2] if p.isdigit())
    return parts >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _source_copy(tmp: Path) -> Path:
    """The files a build reads, links kept as links (the build must follow them itself)."""
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".bench-node", "node_modules")
    for name in ("crdt_sync", *LINKED):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    assert (src / "crdt_sync" / "relay").is_symlink()
    return src


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, set[str]]:
    """``(how, files)``: every file the wheel installs, as paths relative to site-packages."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp)
    if _can_build_wheels():
        out = tmp / "dist"
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "-q", "-w", str(out), str(src)], src)
        (wheel,) = out.glob("crdt_sync-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            return "wheel", set(zf.namelist())
    lib = tmp / "lib"
    _run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
          "--build-lib", str(lib)], src)
    return "build_py", {p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()}


def test_the_node_driver_files_are_package_data(built: tuple[str, set[str]]) -> None:
    _how, files = built
    shipped = {p.name for p in NODE.iterdir() if p.is_file()}
    assert {"driver.cjs", "yjs.cjs", "automerge.cjs", "package.json"} <= shipped
    for name in shipped:
        assert f"crdt_sync/benchmarks/merge/node/{name}" in files, name


def test_one_top_level_name(built: tuple[str, set[str]]) -> None:
    how, files = built
    tops = {f.split("/")[0] for f in files}
    if how == "wheel":
        (dist_info,) = tops - {"crdt_sync"}
        assert dist_info.startswith("crdt_sync-") and dist_info.endswith(".dist-info")
        tops.discard(dist_info)
    assert tops == {"crdt_sync"}
    for name in LINKED:  # inside crdt_sync, followed from the links
        assert f"crdt_sync/{name}/__init__.py" in files
    assert {"crdt_sync/py.typed", "crdt_sync/relay/server.py", "crdt_sync/transports/websocket.py",
            "crdt_sync/benchmarks/merge/nodejs.py", "crdt_sync/cli/__init__.py"} <= files
    assert not [f for f in files if "__pycache__" in f or ".bench-node" in f or f.startswith("tests/")]


def test_the_wheel_names_the_command(built: tuple[str, set[str]]) -> None:
    how, files = built
    if how != "wheel":
        pytest.skip("this venv's setuptools builds no wheels (needs >= 70.1 or the wheel package); "
                    "build_py checked the files")
    (entry_points,) = [f for f in files if f.endswith(".dist-info/entry_points.txt")]
    assert entry_points
