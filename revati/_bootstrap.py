"""Entry point run by revati's sitecustomize in every injected process (see revati/inject.py).

If loading revati fails, the process stops with one line naming the failure. Python would
otherwise print "Error in sitecustomize" and run the program without the shim: on a machine
without a GPU it fails later for a reason that hides the real one, and under ``revati trace``
it runs untraced as if nothing were wrong. ``REVATI_TRACEBACK=1`` prints the traceback too.
"""

from __future__ import annotations

import importlib
import os
import sys

from revati.inject import read_config

# mode -> module whose activate(config) loads it into this process
_ACTIVATORS = {
    "emulate": "revati.shim.activate",
    "trace": "revati.tracer.activate",
}

# The exit status of a process that revati could not load into (EX_SOFTWARE, sysexits.h).
ACTIVATION_FAILED_EXIT = 70


def activate_from_env() -> None:
    try:
        config = read_config()
        if not config:
            return
        module = importlib.import_module(_ACTIVATORS[config["mode"]])
        module.activate(config)
    except Exception as exc:   # noqa: BLE001 -- every failure ends the process, see the docstring
        if os.environ.get("REVATI_TRACEBACK"):
            import traceback

            traceback.print_exc()
        program = " ".join(sys.argv[:2]) or sys.executable
        print(f"revati: could not load into `{program}` (pid {os.getpid()}): {type(exc).__name__}: {exc}"
              " (REVATI_TRACEBACK=1 shows where)", file=sys.stderr, flush=True)
        os._exit(ACTIVATION_FAILED_EXIT)
