"""``python -m m2f_hf.ops [--arch "8.0;9.0"] [--verbose]``: build the CUDA kernel ahead of time (docs/kernel.md)."""

import sys

from .build import main

sys.exit(main())
