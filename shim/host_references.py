"""The fastest host segments of earlier runs, per machine and program (Note [Host-time drift
filter] in revati/shim/clock.py): loaded when a process starts, merged back when it exits.

A segment's key is the pair of op names around it, so the same pair means different Python in
different programs: references are kept per program (the command's first two words, e.g.
``vllm serve`` or ``-m revati.drivers.hf_cb``) and per machine (the host calibration's key:
CPU model, Python and numpy versions).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def path_for(argv: list[str] | None = None) -> Path:
    from revati import hostcpu, paths

    program = " ".join((argv if argv is not None else sys.argv)[:2])
    digest = hashlib.sha256(f"{hostcpu.machine_key()}|{program}".encode()).hexdigest()[:16]
    return paths.revati_home() / "cache" / f"host-segments-{digest}.json"


def load(path: Path) -> dict[tuple[str, str], int]:
    try:
        rows = json.loads(path.read_text())
        return {(a, b): int(ns) for a, b, ns in rows}
    except (OSError, ValueError, TypeError):
        return {}   # none yet, or damaged: this run builds its own


def save(path: Path, references: dict[tuple[str, str], int]) -> None:
    merged = load(path)
    for k, ns in references.items():
        merged[k] = min(ns, merged.get(k, ns))
    from revati.parquet_io import atomic_write_bytes

    try:
        atomic_write_bytes(path, json.dumps([[a, b, ns] for (a, b), ns in sorted(merged.items())]).encode())
    except OSError:
        pass   # a read-only home: the next run starts without references
