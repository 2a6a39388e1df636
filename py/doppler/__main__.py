"""``python -m doppler``: the command line (see doppler.cli)."""

import sys

from doppler.cli import main

sys.exit(main())
