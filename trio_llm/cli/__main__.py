"""`python -m trio_llm.cli` runs the trio-llm command."""

import sys

from trio_llm.cli import main

sys.exit(main())
