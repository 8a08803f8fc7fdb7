"""Finding the processes a test started, from /proc (shared by the emulation and lifetime tests)."""

from __future__ import annotations

import os
from pathlib import Path


def pids_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1][1:2]
        except OSError:
            continue
        if marker in cmd and state not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids
