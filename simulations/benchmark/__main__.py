"""``python -m simulations.benchmark NAME``."""

import sys

from simulations.benchmark import main

sys.exit(main())
