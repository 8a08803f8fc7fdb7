"""Rich consoles for revati's tables: full width when the output is not a terminal.

Rich lays a table out for 80 columns when stdout is a pipe or a file, which cuts wide tables
and wraps numbers mid-value (``38356.4`` / ``4``); a program or a file reading revati's output
wants every row whole. On a terminal the terminal's width is kept.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 4096  # wider than any table revati prints: rows are never wrapped


def console(stderr: bool = False, **kwargs) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if "width" not in kwargs and not _isatty(stream):
        kwargs["width"] = PIPE_WIDTH
    return Console(stderr=stderr, **kwargs)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
