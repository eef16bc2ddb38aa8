"""``python -m pgqrs_sqla.cli``: the ``pgqrs-sqla`` command."""

import sys

from . import main

sys.exit(main())
