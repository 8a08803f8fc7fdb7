"""revati.tracer: record what every CUDA kernel really took on a GPU box, into revati's schema.

Programs traced with ``revati trace`` can mark their steps so that warm-up is dropped
(``--warmup-steps N``) and rows carry a step number. Both calls are no-ops when the program is
not traced, so they can stay in benchmark code::

    import revati.tracer

    for batch in batches:
        model(batch)
        revati.tracer.step()          # this step is done

    with revati.tracer.step_range():  # or: torch.profiler.record_function("revati.step"),
        model(batch)                  #     torch.cuda.nvtx.range("revati.step")
"""

from __future__ import annotations

import contextlib
from typing import Iterator


def _session():
    import sys

    module = sys.modules.get("revati.tracer.session")
    return module.current() if module is not None else None


def is_tracing() -> bool:
    """True inside a process that ``revati trace`` is recording."""
    return _session() is not None


def step() -> int | None:
    """Mark the end of a step; returns the number of steps marked so far (None if not traced)."""
    session = _session()
    return session.mark_step() if session is not None else None


@contextlib.contextmanager
def step_range() -> Iterator[None]:
    """Mark the enclosed block as one step (a ``revati.step`` range)."""
    session = _session()
    start = session.now_ns() if session is not None else None
    try:
        yield
    finally:
        if session is not None and start is not None:
            session.add_step_range(start, session.now_ns())
