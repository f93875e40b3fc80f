"""`python -m vidmill`."""

import sys

from vidmill.cli import main

sys.exit(main())
