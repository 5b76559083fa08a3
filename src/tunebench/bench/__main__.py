"""`python -m tunebench.bench ...`: see tunebench.bench.cli."""

import sys

from tunebench.bench.cli import main

sys.exit(main())
