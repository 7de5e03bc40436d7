"""``python -m stargan.cli`` (what ``make demo`` and torchrun run)."""
import sys

from stargan.cli import main

sys.exit(main())
