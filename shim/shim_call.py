"""``ShimCall``: revati's own CPU time inside a program's thread, left out of its host clock.

The one context manager that does this (Note [Virtual host clock], revati/shim/clock.py). Only
the outermost shim call on a thread excludes its time: nested ones (a special handler falling
back to the generic op path, a collective issued from a handler) are already inside it.
``dispatch._dispatch``, the per-op hot path, does the same inline on the same thread-local depth
(``_TLS.depth``) instead of building a ShimCall per op.
"""

from __future__ import annotations

import threading

from revati.shim import runtime as _runtime_mod
from revati.shim.clock import cpu_ns

_TLS = threading.local()   # .depth: how many shim calls this thread is inside (absent: 0)


class ShimCall:
    """``with ShimCall(rt):`` -- the CPU time of the outermost shim call on this thread is
    revati's, not the program's (Note [Virtual host clock]): excluded from the host clock when
    it ends. ``dispatch._dispatch``, the per-op hot path, does the same inline."""

    __slots__ = ("rt", "depth", "cpu0")

    def __init__(self, rt):
        self.rt = rt

    def __enter__(self):
        self.depth = depth = getattr(_TLS, "depth", 0)
        self.cpu0 = cpu_ns()
        _TLS.depth = depth + 1
        return self

    def __exit__(self, *exc):
        _TLS.depth = self.depth
        if self.depth == 0:
            self.rt.clock.exclude_since(self.cpu0)
        return False


def guarded(fn):
    """A special-op handler ``fn(func, args, kwargs, rt)`` run with its CPU time excluded from
    the host clock and counted as one op; returns it as ``handler(func, args, kwargs)``."""
    def wrapper(func, args, kwargs):
        rt = _runtime_mod._RUNTIME
        with ShimCall(rt):
            rt.stats.ops += 1
            return fn(func, args, kwargs, rt)
    return wrapper
