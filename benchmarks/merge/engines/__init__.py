"""The engines the merge benchmark knows, and whether each can run here.

Adapters import their engine at module level, so they are imported only inside the child
process that runs them: a missing engine never breaks the parent or another engine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .. import nodejs


@dataclass(frozen=True, slots=True)
class EngineInfo:
    name: str
    label: str
    runtime: str  # "python" or "node"
    module: str  # the Python adapter module, or the Node adapter file in benchmarks/merge/node
    requires: str  # the import name or npm package it needs
    unit: str  # what its text positions count (see benchmarks.merge._flat)


ENGINES: dict[str, EngineInfo] = {e.name: e for e in (
    EngineInfo("ours", "crdt-sync (full write path)", "python", "crdt_sync.benchmarks.merge.engines.ours",
               "crdt_sync", "cp"),
    EngineInfo("pycrdt", "pycrdt (raw)", "python", "crdt_sync.benchmarks.merge.engines.pycrdt_engine",
               "pycrdt", "utf8"),
    EngineInfo("loro", "Loro (Python)", "python", "crdt_sync.benchmarks.merge.engines.loro_engine",
               "loro", "cp"),
    EngineInfo("y-py", "y-py", "python", "crdt_sync.benchmarks.merge.engines.ypy_engine", "y_py", "utf8"),
    EngineInfo("yjs", "Yjs (Node)", "node", "yjs.cjs", "yjs", "utf16"),
    EngineInfo("automerge", "Automerge (Node)", "node", "automerge.cjs", "@automerge/automerge", "utf16"),
)}


def unavailable(info: EngineInfo, node_dir: Path) -> str | None:
    """Why ``info`` cannot run here (None if it can)."""
    if info.runtime == "python":
        if importlib.util.find_spec(info.requires) is None:
            return f"not installed (pip install {info.requires.replace('_', '-')}, or the bench extra)"
        return None
    if nodejs.node_binary() is None:
        return "not installed (no node on PATH)"
    if not nodejs.installed(node_dir, info.requires):
        return f"not installed ({info.requires} not in {node_dir}; run with --setup)"
    return None
