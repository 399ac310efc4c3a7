"""Is this process the `m2f-segment` (or `m2f-export`) command starting? (Decided from the command line alone, without imports.)

`import m2f_hf` registers our classes with transformers' Auto classes, which imports torch and transformers: several
seconds. The command parses its options first (so that `--help`, `--version` and option errors answer at once), so
while it starts, the package's `__init__` defers that work to the first use of the package's API, which the
command triggers right after parsing. Any other process (a script, a notebook, `python -m m2f_hf.something`, pytest)
imports the package eagerly, as before.
"""

from __future__ import annotations

import os
import sys

PACKAGE = "m2f_hf"
COMMAND = "m2f-segment"
# other commands that parse their options before the heavy imports, as modules (`python -m`) and console scripts
OTHER_MODULES = ("m2f_hf.export",)
OTHER_COMMANDS = ("m2f-export",)
# interpreter options that take a separate argument (`python -X importtime -m m2f_hf`)
_OPTIONS_WITH_ARGUMENT = ("-X", "-W", "-Q")


def started_as_command() -> bool:
    """True for `python [options] -m m2f_hf ...` / `-m m2f_hf.export` and the `m2f-segment` / `m2f-export` scripts."""
    argv = list(getattr(sys, "orig_argv", None) or [])  # the interpreter's own command line (Python 3.10+)
    index = 1
    while index < len(argv):
        argument = argv[index]
        if argument == "-m":
            return index + 1 < len(argv) and argv[index + 1] in (PACKAGE, *OTHER_MODULES)
        if argument.startswith("-m"):
            return argument[2:] in (PACKAGE, *OTHER_MODULES)
        if not argument.startswith("-") or argument in ("-c", "-"):
            break  # a script (the console script, say) or code: decided by the script's name below
        index += 2 if argument in _OPTIONS_WITH_ARGUMENT else 1
    # console scripts: `m2f-segment` on POSIX, `m2f-segment.exe` / `m2f-segment-script.py` on Windows
    name = os.path.basename(sys.argv[0] if sys.argv else "")
    return any(name in (command, f"{command}.exe", f"{command}-script.py") for command in (COMMAND, *OTHER_COMMANDS))
