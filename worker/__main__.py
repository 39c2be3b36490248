"""``python -m batchctl.worker``: run a worker as ``batchctl worker`` does (logging configured, exit code)."""

from __future__ import annotations

import sys

from batchctl.worker.cli import main

if __name__ == "__main__":
    sys.exit(main())
