"""Entry point of the tracer inside every traced process (called by revati/_bootstrap.py).

``revati trace`` runs the command with ``injection_env("trace", config)``; Python's start-up
imports revati's sitecustomize, which calls :func:`activate` with that config. The backend
starts here (cupti) or when the program imports torch (kineto); the process's tables are
written when it exits (see tracer/session.py).
"""

from __future__ import annotations

import sys
from typing import Any, Mapping

from revati.tracer.config import TraceConfig


def activate(config: Mapping[str, Any]) -> None:
    try:
        cfg = TraceConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        print(f"revati trace: bad tracer config in REVATI_INJECT, not tracing: {exc}", file=sys.stderr)
        return
    if cfg.in_process_backend is None:
        return  # bpf only: probes from outside, nothing to load here
    from revati.tracer import session

    session.start(cfg)
