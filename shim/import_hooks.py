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


def on_import(name: str, callback: Callable) -> None:
    mod = sys.modules.get(name)
    if mod is not None:
        callback(mod)
        return
    _CALLBACKS.setdefault(name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
