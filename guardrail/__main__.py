"""``python -m guardrail`` runs the command line."""

import sys

from guardrail.cli import main

sys.exit(main())
