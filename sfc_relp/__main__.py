"""`python -m sfc_relp`: the same command line as `sfc-relp`."""

import sys

from .cli import main

sys.exit(main())
