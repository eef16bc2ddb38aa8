"""``python -m pgqrs_sqla``: the ``pgqrs-sqla`` command."""

import sys

from .cli import main

sys.exit(main())
