"""One engine, one workload, in a process of its own:

    python -m benchmarks.merge.worker --engine NAME --workload DIR --work DIR --content FILE
                                      [--behind 1,100] [--node-dir DIR]

Reports progress and one result on stdout (the :mod:`benchmarks._harness` protocol) and
writes the final content (the text, or the assets as JSON) to ``--content`` for the parent
to check. A Node engine's worker replaces this process (see :mod:`.nodejs`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .._harness import ChildChannel
from . import _flat, driver, nodejs
from .engines import ENGINES
from .engines.base import Engine


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.merge.worker")
    p.add_argument("--engine", required=True, choices=sorted(ENGINES))
    p.add_argument("--workload", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--content", type=Path, required=True)
    p.add_argument("--behind", default="")
    p.add_argument("--node-dir", type=Path, default=nodejs.DEFAULT_DIR)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    info = ENGINES[args.engine]
    if info.runtime == "node":
        forwarded = list(sys.argv[1:] if argv is None else argv)
        nodejs.exec_worker(info.module, args.node_dir, forwarded)
    engine: Engine = importlib.import_module(info.module).ENGINE
    if engine.unit != info.unit:
        raise RuntimeError(f"{info.module} counts {engine.unit}, the registry says {info.unit}")
    channel = ChildChannel()
    kind = _flat.read_meta(args.workload)["kind"]
    args.work.mkdir(parents=True, exist_ok=True)
    if kind == "sequential":
        behind = [int(k) for k in args.behind.split(",") if k]
        result, text = driver.sequential(engine, args.workload, behind, args.work, channel.progress)
        args.content.write_text(text, encoding="utf-8")
    elif kind == "concurrent":
        result, text = driver.replay_concurrent(engine, args.workload, args.work, channel.progress)
        args.content.write_text(text, encoding="utf-8")
    else:
        result, assets = driver.field_team(engine, args.workload, args.work, channel.progress)
        args.content.write_text(json.dumps(assets), encoding="utf-8")
    channel.result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
