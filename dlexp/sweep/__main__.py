"""``python -m dlexp.sweep``: the ``dlexp-sweep`` command."""
import sys

from .cli import main

sys.exit(main())
