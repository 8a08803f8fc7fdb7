"""Virtual-time coordination across the processes of an emulation (torch-free).

``core``: the timekeeper's decisions as a pure state machine; ``server``: the timekeeper
process around it; ``handle``: starting one and talking to it from the launcher; ``client``:
``Coordinator``, one per emulated process, around the pure ``client_core`` with the sockets and
threads of ``client_io``; ``wire``: the framed message format. See Note [Virtual time
coordination] in ``core.py``.

Names are imported lazily, so an emulated process that only needs the client does not load
the server's modules.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CollectiveResult": "client", "Coordinator": "client", "PendingCollective": "client",
    "connect": "client", "TimekeeperConfig": "server", "TimekeeperHandle": "handle",
    "start_timekeeper": "handle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
