"""``python -m chathist.cli``: the ``chathist`` command line."""

import sys

from chathist.cli.main import main

sys.exit(main())
