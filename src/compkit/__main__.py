"""``python -m compkit``: see :mod:`compkit.cli`."""

import sys

from compkit.cli import main

sys.exit(main())
