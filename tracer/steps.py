"""Step marks: which step of the program each recorded event belongs to.

A program marks steps in one of two ways (both are no-ops when it is not traced):

- ``revati.tracer.step()`` after each step, like ``torch.profiler.profile.step()``: everything
  before the first call is step 0, between the first and second call step 1, and so on;
- a range named ``revati.step`` around each step (``torch.profiler.record_function``,
  ``torch.cuda.nvtx.range`` or ``revati.tracer.step_range()``): the k-th range is step k,
  time between ranges belongs to the range before it and time before the first range is
  step -1 (set-up).

# Note [Step marks cross processes]
Marks carry wall-clock (Unix epoch) nanoseconds, the clock every table uses, and are appended
to ``steps.<pid>.jsonl`` in the run folder as they happen. A process that marked no steps itself
(an engine worker, when only the driver script calls ``step()``) uses the marks of every other
process of the run, so ``--warmup-steps`` drops the same wall-clock span everywhere.

Pure Python: no torch.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

STEP_RANGE_NAME = "revati.step"
MARKS_PREFIX = "steps."


@dataclass
class StepMarks:
    """Step boundaries of one process (or of a whole run, merged)."""

    marks_ns: list[int] = field(default_factory=list)          # step() calls
    ranges_ns: list[tuple[int, int]] = field(default_factory=list)  # revati.step ranges

    def add_mark(self, t_ns: int) -> None:
        self.marks_ns.append(int(t_ns))

    def add_range(self, start_ns: int, end_ns: int) -> None:
        self.ranges_ns.append((int(start_ns), int(end_ns)))

    @property
    def empty(self) -> bool:
        return not self.marks_ns and not self.ranges_ns

    @property
    def count(self) -> int:
        """Steps marked: ranges when any, else step() calls (the last call closes a step)."""
        return len(self.ranges_ns) if self.ranges_ns else len(self.marks_ns)

    def merged(self, other: "StepMarks") -> "StepMarks":
        return StepMarks(sorted(set(self.marks_ns) | set(other.marks_ns)),
                         sorted(set(self.ranges_ns) | set(other.ranges_ns)))

    def assigner(self) -> "StepAssigner":
        return StepAssigner(self)


class StepAssigner:
    """Maps a timestamp to its step; ranges win over step() marks when a program used both."""

    def __init__(self, marks: StepMarks):
        self._use_ranges = bool(marks.ranges_ns)
        self._starts = sorted(s for s, _ in marks.ranges_ns)
        self._marks = sorted(marks.marks_ns)

    def __call__(self, t_ns: int | None) -> int | None:
        if t_ns is None:
            return None
        if self._use_ranges:
            return bisect.bisect_right(self._starts, t_ns) - 1
        if self._marks:
            return bisect.bisect_right(self._marks, t_ns)
        return None


def append_mark_line(run_dir: Path, pid: int, record: dict) -> None:
    """Append one mark to ``steps.<pid>.jsonl`` (a single O_APPEND write: whole lines only)."""
    path = Path(run_dir) / f"{MARKS_PREFIX}{pid}.jsonl"
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def parse_mark_lines(lines: Iterable[str]) -> StepMarks:
    marks = StepMarks()
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash; the others still count
        if rec.get("kind") == "mark" and "t_ns" in rec:
            marks.add_mark(rec["t_ns"])
        elif rec.get("kind") == "range" and "start_ns" in rec and "end_ns" in rec:
            marks.add_range(rec["start_ns"], rec["end_ns"])
    return marks


def read_run_marks(run_dir: Path, exclude_pid: int | None = None) -> StepMarks:
    """Every process's marks in a run folder, merged (see Note [Step marks cross processes])."""
    merged = StepMarks()
    for path in sorted(Path(run_dir).glob(f"{MARKS_PREFIX}*.jsonl")):
        if exclude_pid is not None and path.name == f"{MARKS_PREFIX}{exclude_pid}.jsonl":
            continue
        try:
            merged = merged.merged(parse_mark_lines(path.read_text().splitlines()))
        except OSError:
            continue
    return merged
