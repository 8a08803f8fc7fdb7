"""The patch registry: every name the shim replaces in another module, and every import hook.

# Note [Patch registry]
# revati replaces names in the stdlib (clocks, waits, selectors, sockets, fork/exec), in torch
# (``torch.cuda``, ``torch.accelerator``, factories) and in the libraries a serving engine
# imports (zmq, pynvml, triton, uvloop, vLLM internals through import hooks). All of it goes
# through ``patch``: it records the original once (patching a name again keeps the first
# original, so installers are idempotent and ``original`` is always the unpatched object), and
# ``patches()`` lists what was replaced, by which installer. Import hooks (``on_import`` in
# revati/shim/import_hooks.py) are recorded with whether they fired: a hook for a module the
# program never imported is normal (a library it does not use), but a hook for a module of an
# engine the program did import that never fired means the engine moved a module revati relies
# on -- silent mistiming otherwise. ``revati emulate --explain`` prints both; ``-v`` warns about
# engine hooks that did not fire.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass
class Patch:
    owner: Any
    name: str
    original: Any          # _MISSING when the name did not exist
    replacement: Any
    installer: str         # the module that installed it

    @property
    def where(self) -> str:
        owner = self.owner
        label = getattr(owner, "__qualname__", None) if isinstance(owner, type) else None
        mod = getattr(owner, "__module__", None) if isinstance(owner, type) else getattr(owner, "__name__", None)
        if label is not None and mod is not None:
            return f"{mod}.{label}.{self.name}"
        return f"{mod or type(owner).__name__}.{self.name}"


_PATCHES: dict[tuple[int, str], Patch] = {}
_OWNERS: dict[int, Any] = {}     # keeps patched owners alive so their ids stay unique


def patch(owner: Any, name: str, replacement: Any) -> Any:
    """Replace ``owner.name`` by ``replacement``; returns the original (the first one, if the name
    was patched before). Note [Patch registry]."""
    key = (id(owner), name)
    rec = _PATCHES.get(key)
    if rec is None:
        original = owner.__dict__.get(name, _MISSING) if isinstance(owner, type) else getattr(owner, name, _MISSING)
        if original is _MISSING and isinstance(owner, type):
            original = getattr(owner, name, _MISSING)   # inherited: restoring means deleting ours
        rec = _PATCHES[key] = Patch(owner, name, original, replacement, _caller())
        _OWNERS[id(owner)] = owner
    else:
        rec.replacement = replacement
    setattr(owner, name, replacement)
    return rec.original


def original(owner: Any, name: str) -> Any:
    """The unpatched ``owner.name`` (the current one if revati never patched it)."""
    rec = _PATCHES.get((id(owner), name))
    if rec is None:
        return getattr(owner, name)
    if rec.original is _MISSING:
        raise AttributeError(f"{rec.where} did not exist before revati patched it")
    return rec.original


def is_patched(owner: Any, name: str) -> bool:
    return (id(owner), name) in _PATCHES


def patches() -> list[Patch]:
    return list(_PATCHES.values())


def _caller() -> str:
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "?")


# -- import hooks ----------------------------------------------------------------------------------

@dataclass
class Hook:
    module: str            # the module whose import runs it
    label: str             # what it installs
    installer: str
    engine: str | None     # the engine it belongs to ("vllm", ...): see hooks_not_fired
    fired: bool = False


_HOOKS: list[Hook] = []


def record_hook(module: str, label: str, installer: str, engine: str | None) -> Hook:
    hook = Hook(module, label, installer, engine)
    _HOOKS.append(hook)
    return hook


def hooks() -> list[Hook]:
    return list(_HOOKS)


def hooks_not_fired() -> list[Hook]:
    """Hooks of an engine this process imported whose module was never imported: the engine
    moved something revati relies on (Note [Patch registry])."""
    return [h for h in _HOOKS if not h.fired and h.engine is not None and h.engine in sys.modules]


def explain() -> dict:
    """What this process patched and which hooks fired, for the process summary."""
    by_installer: dict[str, list[str]] = {}
    for p in _PATCHES.values():
        by_installer.setdefault(p.installer, []).append(p.where)
    engines = sorted({h.engine for h in _HOOKS if h.engine is not None and h.engine in sys.modules})
    return {
        "patches": {k: sorted(v) for k, v in sorted(by_installer.items())},
        "hooks": [{"module": h.module, "label": h.label, "engine": h.engine, "fired": h.fired} for h in _HOOKS],
        "engines_imported": engines,
    }


def hooks_not_fired_in_run(explained: list[dict]) -> list[str]:
    """Over all processes of a run (their ``explain()``): engine hooks that fired in none of them
    although some process imported the engine."""
    engines = {e for ex in explained for e in ex.get("engines_imported", [])}
    seen: dict[tuple[str, str], dict] = {}
    fired: set[tuple[str, str]] = set()
    for ex in explained:
        for h in ex.get("hooks", []):
            key = (h["module"], h["label"])
            seen.setdefault(key, h)
            if h["fired"]:
                fired.add(key)
    return [f"{m} ({label})" for (m, label), h in seen.items() if (m, label) not in fired and h["engine"] in engines]
