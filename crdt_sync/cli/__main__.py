"""``python -m crdt_sync.cli``: the ``crdt-sync`` command."""

import sys

from .main import main

sys.exit(main())
