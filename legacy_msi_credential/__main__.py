"""``python -m legacy_msi_credential``: the ``legacy-msi`` command."""

import sys

from .cli import main

sys.exit(main())
