"""`python -m m2f_hf.demo`: the same command as `m2f-demo` (see `m2f_hf.demo.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
