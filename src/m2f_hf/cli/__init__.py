"""`m2f-segment` (also `python -m m2f_hf`): segment images, folders, glob patterns and videos.

Options are parsed and checked here with the standard library only (`options.py`); torch, transformers and the
model are imported only once they are valid (`run.py`), so `--help`, `--version` and option errors answer at once.
"""

from __future__ import annotations

import sys

from .options import EXIT_FATAL, CLIError, build_parser, check_args, report_error


def main(argv: list[str] | None = None) -> int:
    """Entry point of `m2f-segment` and `python -m m2f_hf`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        from .run import run  # the heavy imports start here

        return run(args)
    except CLIError as error:
        report_error(str(error))
        return EXIT_FATAL


__all__ = ["CLIError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
