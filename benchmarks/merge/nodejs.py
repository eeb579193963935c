"""Node.js engines: installing them into a local folder, and starting their worker.

``yjs`` and ``@automerge/automerge`` are installed with npm from the ranges in
``benchmarks/merge/node/package.json`` into ``.bench-node/`` at the repository root (git
ignores it) or, in an installed copy, into the user's cache folder; never into the
project's own dependencies. The worker scripts are package data (``node/``, beside this
module) and find the packages through ``NODE_PATH``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

REPO = Path(__file__).resolve().parents[2]


def _default_dir() -> Path:
    """``.bench-node/`` in a checkout (git ignores it); in an installed copy, the user's cache
    folder (site-packages may be read-only, and a reinstall would drop what npm put there)."""
    if (REPO / "pyproject.toml").is_file():
        return REPO / ".bench-node"
    from platformdirs import user_cache_path

    return user_cache_path("crdt-sync") / "bench-node"


DEFAULT_DIR = _default_dir()
SCRIPTS = Path(__file__).resolve().parent / "node"
PACKAGE_JSON = SCRIPTS / "package.json"
#: npm on a slow link; a failed setup is reported, never fatal to the run.
NPM_TIMEOUT = 300


def node_binary() -> str | None:
    return shutil.which("node")


def installed(node_dir: Path, package: str) -> bool:
    """``package`` is installed in ``node_dir`` from the package.json we ship now."""
    stamp = node_dir / "package.json"
    return (node_dir / "node_modules" / package / "package.json").is_file() and stamp.is_file() \
        and stamp.read_bytes() == PACKAGE_JSON.read_bytes()


def setup(node_dir: Path) -> str | None:
    """Install the Node engines into ``node_dir``; returns why that failed, or None.

    Holds a lock on the folder, so two runs (say, tests started side by side) do not run
    npm into it at once; the second finds the work done.
    """
    npm = shutil.which("npm")
    if npm is None or node_binary() is None:
        return "node and npm are needed on PATH"
    node_dir.mkdir(parents=True, exist_ok=True)
    with (node_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(installed(node_dir, p) for p in ("yjs", "@automerge/automerge")):
            return None
        shutil.copyfile(PACKAGE_JSON, node_dir / "package.json.new")
        os.replace(node_dir / "package.json.new", node_dir / "package.json")
        try:
            proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-package-lock",
                                   "--loglevel=error"], cwd=node_dir, capture_output=True, text=True,
                                  timeout=NPM_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"npm install took longer than {NPM_TIMEOUT} s"
        if proc.returncode != 0:
            (node_dir / "package.json").unlink(missing_ok=True)  # so the next run tries again
            return f"npm install failed: {(proc.stderr or proc.stdout).strip()[-800:]}"
    return None


def exec_worker(adapter: str, node_dir: Path, argv: list[str]) -> NoReturn:
    """Replace this process with the Node worker, so the parent's pipe and the peak RSS the
    worker reports are Node's own."""
    node = node_binary()
    if node is None:
        raise RuntimeError("node is not on PATH")
    env = dict(os.environ, NODE_PATH=str(node_dir / "node_modules"))
    os.execve(node, [node, str(SCRIPTS / "driver.cjs"), "--adapter", str(SCRIPTS / adapter), *argv], env)
