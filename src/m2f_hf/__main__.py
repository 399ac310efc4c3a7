"""`python -m m2f_hf IMAGE...`: the same command as `m2f-segment` (see `m2f_hf.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
