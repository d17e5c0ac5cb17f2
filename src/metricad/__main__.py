"""``python -m metricad``: the command line (also what ``torchrun -m metricad train ...`` runs on each rank)."""

import sys

from metricad.cli import main

sys.exit(main())
