"""``python -m guarded_serving ...``: the same as the ``guarded-serving`` command."""

import sys

from .cli import main

sys.exit(main())
