"""`python -m gatekeeper` is the `gatekeeper` command."""

import sys

from gatekeeper.cli import main

sys.exit(main())
