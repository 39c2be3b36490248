"""``python -m batchctl``: the same as the ``batchctl`` command."""

import sys

from batchctl.frontend.cli import main

sys.exit(main())
