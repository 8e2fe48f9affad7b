"""``python -m master``: the same as the ``pingap`` command (used to start a new master)."""

import sys

from master.cli import main

sys.exit(main())
