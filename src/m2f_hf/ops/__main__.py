"""``python -m m2f_hf.ops [--cpu] [--arch "8.0;9.0"] [--verbose]``: build the CUDA (or, with ``--cpu``, the CPU) kernel
ahead of time (docs/kernel.md)."""

import sys

from .build import main

sys.exit(main())
