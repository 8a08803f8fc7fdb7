"""Note [Patch registry] (revati/shim/patching.py): every replaced name and import hook is recorded."""
from __future__ import annotations

import sys
import types

import pytest

from revati.shim import import_hooks, patching


def _module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.f = lambda: "real"
    return mod


def test_patch_records_the_first_original_and_is_idempotent():
    mod = _module("revati_test_patch_target")
    first = lambda: "first"   # noqa: E731
    assert patching.patch(mod, "f", first)() == "real"
    assert mod.f is first
    second = lambda: "second"   # noqa: E731
    assert patching.patch(mod, "f", second)() == "real"   # patching again keeps the original
    assert patching.original(mod, "f")() == "real"
    assert patching.is_patched(mod, "f")
    recs = [p for p in patching.patches() if p.owner is mod]
    assert len(recs) == 1 and recs[0].replacement is second
    assert recs[0].installer == __name__ and recs[0].where == "revati_test_patch_target.f"


def test_a_name_that_did_not_exist_has_no_original():
    mod = _module("revati_test_patch_new")
    patching.patch(mod, "g", lambda: 1)
    with pytest.raises(AttributeError, match="did not exist"):
        patching.original(mod, "g")


def test_class_attributes_are_named_by_their_class():
    class Target:
        def run(self):
            return "real"

    patching.patch(Target, "run", lambda self: "patched")
    assert Target().run() == "patched"
    rec = [p for p in patching.patches() if p.owner is Target][0]
    assert rec.where.endswith("Target.run")
    assert patching.original(Target, "run")(Target()) == "real"


def test_import_hooks_are_recorded_with_whether_they_fired():
    name = "revati_test_hooked_module"
    seen = []
    import_hooks.on_import(name, seen.append, engine="revati_test_engine")
    hook = [h for h in patching.hooks() if h.module == name][0]
    assert not hook.fired and hook.installer == __name__
    sys.modules[name] = mod = types.ModuleType(name)
    try:
        import_hooks.on_import(name + "_other", seen.append, engine="revati_test_engine")
        # the hook above fires on a real import; here the module is already loaded: fires at once
        import_hooks.on_import(name, seen.append, engine="revati_test_engine")
        assert seen == [mod]
        assert [h.fired for h in patching.hooks() if h.module == name] == [False, True]
    finally:
        del sys.modules[name]


def test_a_run_reports_engine_hooks_that_fired_in_no_process():
    hooks = [{"module": "eng.a", "label": "x", "engine": "eng", "fired": False},
             {"module": "eng.b", "label": "y", "engine": "eng", "fired": False},
             {"module": "other.c", "label": "z", "engine": "other", "fired": False}]
    server = {"hooks": hooks, "engines_imported": ["eng"]}
    worker = {"hooks": [dict(hooks[0], fired=True), hooks[1], hooks[2]], "engines_imported": ["eng"]}
    # eng.a fired in the worker; eng.b fired nowhere although eng was imported; `other` was
    # never imported, so its hook not firing is normal
    assert patching.hooks_not_fired_in_run([server, worker]) == ["eng.b (y)"]
