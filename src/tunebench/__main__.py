"""`python -m tunebench ...`: the command line (tunebench.pipeline.cli)."""

import sys

from tunebench.pipeline.cli import main

sys.exit(main())
