"""`python -m m2f_hf.export`: the `m2f-export` command."""

import sys

from .cli import main

sys.exit(main())
