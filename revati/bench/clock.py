"""The clocks the benchmark reads, handed in by its caller.

``now`` times the benchmark: arrival offsets, send and token timestamps, the run's duration.
``wall`` times the run on the real clock, for ``wall_duration_s`` (the emulator's speed-up).
Both default to ``time.perf_counter``, looked up at every call, so under ``revati emulate``
(where the shim replaces ``time.perf_counter``) ``now`` is the virtual clock as intended.

Outside emulation the two are the same clock. Inside it, ``wall`` must be the real, unpatched
clock, which only the emulator knows: the caller that runs under emulation passes it, e.g.::

    from revati.shim.vtime import REAL
    run_bench(cfg, clock=Clock(wall=REAL["perf_counter"]))

The bench itself never imports the shim (tests/test_layering.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


def perf_counter() -> float:
    """``time.perf_counter()`` as it is now (patched or not), not as it was at import."""
    return time.perf_counter()


@dataclass(frozen=True)
class Clock:
    now: Callable[[], float] = perf_counter     # the benchmark's clock (virtual under emulation)
    wall: Callable[[], float] = perf_counter    # the real clock (wall_duration_s)


DEFAULT_CLOCK = Clock()
