import sys

from metricad.cli import main

sys.exit(main())
