"""The ``crdt-sync`` command line (the composition root): see :mod:`crdt_sync.cli.main`."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
