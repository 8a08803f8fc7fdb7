"""Run a callback right after a module is imported (or now, if it already is).

Used to adapt libraries the program imports after revati loads (uvloop, zmq, vllm, ...)
without importing them eagerly.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Callable

_CALLBACKS: dict[str, list[Callable]] = {}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in _CALLBACKS:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, fullname)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, fullname: str):
        self.inner = inner
        self.fullname = fullname

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        for cb in _CALLBACKS.pop(self.fullname, []):
            cb(module)

    def __getattr__(self, name):
        return getattr(self.inner, name)


_FINDER = _Finder()


def on_import(name: str, callback: Callable, engine: str | None = None) -> None:
    """Run ``callback(module)`` once module ``name`` is imported (now, if it is). Recorded in the
    patch registry with whether it fired; ``engine``: the engine the module belongs to, whose
    import makes a hook that never fired a warning (Note [Patch registry])."""
    from revati.shim import patching

    hook = patching.record_hook(name, getattr(callback, "__qualname__", repr(callback)),
                                sys._getframe(1).f_globals.get("__name__", "?"), engine)

    def run(module, _callback=callback):
        hook.fired = True
        _callback(module)

    mod = sys.modules.get(name)
    if mod is not None:
        run(mod)
        return
    _CALLBACKS.setdefault(name, []).append(run)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
