"""``python -m chathist``: the ``chathist`` command line."""

import sys

from chathist.cli import main

sys.exit(main())
