"""``python -m sgflows``: the command line."""

import sys

from sgflows.cli import main

sys.exit(main())
