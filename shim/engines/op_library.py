"""Stand-ins for an engine's compiled CUDA op libraries: schemas, shape rules, no kernels.

An engine's CUDA code path calls its kernels through ``torch.ops.NS.op``, registered when a
compiled extension module is imported. Where that module cannot load (a CPU build of torch, or
no wheel for it), ``ExtensionFinder`` supplies a module whose import defines the ops with the
CUDA build's schemas (``define``) and gives each
  - a Meta kernel (its shape rule; the VTensor dispatch runs it once per signature and charges
    the op's predicted time through revati.replay.op_mapping); ops that only write into their
    arguments get a rule that returns nothing;
  - or a host kernel (an op that answers a question about the device, or takes host tensors);
  - or a VTensor special handler (an op that aliases its input).
A real extension that loads always wins: the finder then only adds the Meta kernels it lacks.
The tables are per engine (engines.vllm.oplib, engines.sglang.oplib).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

_LIBS: list = []   # torch.library.Library objects must outlive their definitions


@dataclass(frozen=True)
class OpTables:
    """Per qualified op name (``ns::name``): its shape rule, host kernel or special handler."""

    meta_rules: dict[str, Callable] = field(default_factory=dict)
    host_kernels: dict[str, tuple[str, Callable]] = field(default_factory=dict)   # (dispatch key, fn)
    special_handlers: dict[str, Callable] = field(default_factory=dict)


def meta_none(*args, **kwargs):
    return None


def define(namespaces: dict[str, list[str]], tables: OpTables) -> None:
    """Define each op that does not exist yet; give every op its Meta/host kernel or handler."""
    from revati.shim import special_ops

    for ns, schemas in namespaces.items():
        lib = torch.library.Library(ns, "FRAGMENT")
        _LIBS.append(lib)
        for schema in schemas:
            name = schema.split("(", 1)[0].strip()
            qual = f"{ns}::{name}"
            if not has_schema(qual):
                lib.define(schema)
            host = tables.host_kernels.get(qual)
            if host is not None and not torch._C._dispatch_has_kernel_for_dispatch_key(qual, host[0]):
                lib.impl(name, host[1], host[0])
            special = tables.special_handlers.get(qual)
            if special is not None:
                special_ops.register_special(getattr(getattr(torch.ops, ns), name).default, special)
                continue
            if not torch._C._dispatch_has_kernel_for_dispatch_key(qual, "Meta"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    lib.impl(name, tables.meta_rules.get(qual, meta_none), "Meta")


def has_schema(qualname: str) -> bool:
    try:
        return bool(torch._C._jit_get_schemas_for_operator(qualname))
    except RuntimeError:
        return False


class _StandInLoader(importlib.abc.Loader):
    def __init__(self, namespaces: dict[str, list[str]], tables: OpTables, doc: str):
        self.namespaces = namespaces
        self.tables = tables
        self.doc = doc

    def create_module(self, spec):
        return types.ModuleType(spec.name)

    def exec_module(self, module):
        module.__revati_stand_in__ = True
        module.__doc__ = self.doc
        module.__file__ = __file__   # loaders log where an extension came from: here
        define(self.namespaces, self.tables)


class _BlockedLoader(importlib.abc.Loader):
    def __init__(self, reason: str):
        self.reason = reason

    def create_module(self, spec):
        raise ImportError(f"{spec.name} {self.reason}", name=spec.name)

    def exec_module(self, module):  # pragma: no cover - create_module raises
        pass


class _AddMetaLoader(importlib.abc.Loader):
    """Loads the real extension, then adds the Meta kernels and handlers it lacks."""

    def __init__(self, inner, namespaces: dict[str, list[str]], tables: OpTables):
        self.inner = inner
        self.namespaces = namespaces
        self.tables = tables

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        define(self.namespaces, self.tables)


class ExtensionFinder(importlib.abc.MetaPathFinder):
    """Supplies the extension modules in ``extensions`` (module name -> namespaces -> schemas) when
    no real one is found; refuses the modules in ``blocked`` when a real one exists."""

    def __init__(self, extensions: dict[str, dict[str, list[str]]], tables: OpTables, *,
                 blocked: tuple[str, ...] = (), stand_in_doc: str = "", blocked_reason: str = ""):
        self.extensions = extensions
        self.tables = tables
        self.blocked = blocked
        self.stand_in_doc = stand_in_doc
        self.blocked_reason = blocked_reason

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.extensions and fullname not in self.blocked:
            return None
        real = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            real = finder.find_spec(fullname, path, target)
            if real is not None:
                break
        if fullname in self.blocked:
            return importlib.machinery.ModuleSpec(fullname, _BlockedLoader(self.blocked_reason)) if real is not None else None
        namespaces = self.extensions[fullname]
        if real is not None and self.real_loads(real):
            real.loader = _AddMetaLoader(real.loader, namespaces, self.tables)
            return real
        return importlib.machinery.ModuleSpec(fullname, _StandInLoader(namespaces, self.tables, self.stand_in_doc))

    def real_loads(self, spec) -> bool:
        """Whether the real module found should be loaded (an engine whose wheel ships extensions
        that cannot load on this build overrides this)."""
        return True


def install_finder(finder: importlib.abc.MetaPathFinder) -> None:
    if finder not in sys.meta_path:
        sys.meta_path.insert(0, finder)
