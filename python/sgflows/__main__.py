"""``python -m sgflows``: the command line."""

import sys

from sgflows.cli import console_main

sys.exit(console_main())
