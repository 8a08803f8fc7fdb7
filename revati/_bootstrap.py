"""Entry point run by revati's sitecustomize in every injected process (see revati/inject.py)."""

from __future__ import annotations

import importlib

from revati.inject import read_config

# mode -> module whose activate(config) loads it into this process
_ACTIVATORS = {
    "emulate": "revati.shim.activate",
    "trace": "revati.tracer.activate",
}


def activate_from_env() -> None:
    config = read_config()
    if not config:
        return
    module = importlib.import_module(_ACTIVATORS[config["mode"]])
    module.activate(config)
