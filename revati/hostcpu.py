"""Host-CPU calibration: how fast a machine runs serving host work, so host time can be scaled
from this machine to the GPU box's CPU.

Note [Host-speed calibration]
=============================
An emulated process's host clock counts the CPU time the framework spends here (Note [Virtual
host clock] in revati/shim/clock.py). A GPU box's CPU runs the same Python faster or slower, so
that time is scaled by ``host_speed = score(this machine) / score(target host CPU)``, where a
*score* is the CPU seconds one thread needs for a fixed calibration workload that looks like
serving host work: object/dict/attribute churn and sorting (a scheduler), an asyncio loop with
queues (an API server), regex splitting and dictionary merges (a tokenizer), JSON encoding (SSE
chunks) and small numpy ops (input preparation, sampling bookkeeping). The score is the minimum
over repeats of the workload's thread CPU time: the least this machine needs, which other
processes on the same cores inflate the least.

The target is named with ``revati emulate --host-cpu``: ``native`` (no scaling), a reference
from ``REFERENCE_HOSTS`` (measured with ``revati calibrate`` on that machine; the table says
where and when), or ``auto``: the score that ``revati trace`` recorded on the GPU box whose
kernels the predictor uses (runs.host_score_s), falling back to native when no trace has one.
This machine's score is measured once and cached under REVATI_HOME, keyed by CPU model,
Python and numpy versions and the workload's version.
"""

from __future__ import annotations

import asyncio
import json
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from revati.errors import BadInput

CALIBRATION_VERSION = 1
DEFAULT_REPEATS = 7
CACHE_FILE = "host_calibration.json"


@dataclass(frozen=True)
class ReferenceHost:
    name: str
    score_s: float
    cpu: str
    how: str


# Only machines this project measured itself, with `revati calibrate` (a figure copied from
# elsewhere would measure a different workload). A GPU session adds its box's host here
# (benchmarks/gpu_ground_truth runs `revati calibrate`).
REFERENCE_HOSTS: dict[str, ReferenceHost] = {
    "revati-ci-vm": ReferenceHost(
        "revati-ci-vm", 0.0398,
        "Intel Xeon (virtualised, 2.1 GHz, 2 vCPU, 300 MB L3): the project's development and CI machine",
        "python -m revati.hostcpu 15 on an idle machine, 2026-12-05: 40.4, 39.8, 39.8 ms (median +7-8%)"),
    "h100-box": ReferenceHost(
        "h100-box", 0.0278,
        "Intel Xeon (virtualised, 16 vCPU): the host of a lent H100 80GB HBM3, Python 3.12.3, numpy 2.5.2",
        "python -m revati.hostcpu 15 in benchmarks/gpu_ground_truth/run_all.sh, 2026-12-05 "
        "(traces/gpu/h100-2026-12-05/main-a): 27.8 ms, spread 1.2%. A second lease of the same kind "
        "measured 37.1 ms with spread 38% (main-b: a busy host), not used"),
}
NATIVE = "native"
AUTO = "auto"
NOT_COUNTED = "not counted (--no-host-cpu)"  # what metrics.json says when host time is left out


@dataclass(frozen=True)
class HostScore:
    score_s: float          # min over repeats of the workload's thread CPU seconds
    spread: float           # (median - min) / min over the repeats: how noisy the machine was
    repeats: int
    cpu_model: str
    python: str
    numpy: str
    version: int = CALIBRATION_VERSION


# -- the workload --------------------------------------------------------------------------------

_TEXT = ("The quick brown fox jumps over the lazy dog while the scheduler admits requests, "
         "allocates KV-cache blocks and streams tokens back to forty clients. ") * 8
_WORD = re.compile(r"\w+|[^\w\s]+|\s+")


class _Request:
    __slots__ = ("rid", "prompt_len", "output_len", "generated", "priority", "blocks", "state")

    def __init__(self, rid: int, prompt_len: int, output_len: int):
        self.rid = rid
        self.prompt_len = prompt_len
        self.output_len = output_len
        self.generated = 0
        self.priority = (rid * 7919) % 101
        self.blocks: list[int] = []
        self.state = "waiting"


def _scheduler(steps: int = 300) -> int:
    waiting = [_Request(i, 64 + (i * 37) % 512, 16 + (i * 13) % 64) for i in range(256)]
    running: list[_Request] = []
    free_blocks = list(range(4096))
    done = 0
    for _ in range(steps):
        waiting.sort(key=lambda r: (r.priority, r.rid))
        while waiting and len(running) < 64 and len(free_blocks) > 64:
            req = waiting.pop(0)
            need = (req.prompt_len + 15) // 16
            req.blocks = [free_blocks.pop() for _ in range(min(need, len(free_blocks)))]
            req.state = "running"
            running.append(req)
        batch = {r.rid: {"pos": r.prompt_len + r.generated, "blocks": len(r.blocks)} for r in running}
        for req in running:
            req.generated += 1
        finished = [r for r in running if r.generated >= r.output_len]
        for req in finished:
            free_blocks.extend(req.blocks)
            req.blocks = []
            req.state = "finished"
            waiting.append(_Request(req.rid + 256, req.prompt_len, req.output_len))
        running = [r for r in running if r.state == "running"]
        done += len(finished) + len(batch)
    return done


def _tokenizer(rounds: int = 40) -> int:
    merges = {("t", "h"): "th", ("th", "e"): "the", ("e", "r"): "er", ("i", "n"): "in", ("o", "n"): "on"}
    vocab: dict[str, int] = {}
    total = 0
    for _ in range(rounds):
        for piece in _WORD.findall(_TEXT):
            symbols = list(piece)
            i = 0
            while i < len(symbols) - 1:
                merged = merges.get((symbols[i], symbols[i + 1]))
                if merged is not None:
                    symbols[i:i + 2] = [merged]
                else:
                    i += 1
            for s in symbols:
                total += vocab.setdefault(s, len(vocab))
    return total


def _server(chunks: int = 2000) -> int:
    async def producer(q: asyncio.Queue) -> None:
        for i in range(chunks):
            await q.put({"id": f"cmpl-{i % 40}", "choices": [{"index": 0, "text": "tok", "logprobs": None}],
                         "usage": {"completion_tokens": i}})
        await q.put(None)

    async def consumer(q: asyncio.Queue) -> int:
        size = 0
        while (item := await q.get()) is not None:
            size += len("data: " + json.dumps(item) + "\n\n")
            if size % 7 == 0:
                await asyncio.sleep(0)
        return size

    async def main() -> int:
        q: asyncio.Queue = asyncio.Queue(maxsize=64)
        _, size = await asyncio.gather(producer(q), consumer(q))
        return size

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _numpy_small(rounds: int = 600) -> float:
    import numpy as np

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((8, 512)).astype(np.float32)
    positions = np.arange(256, dtype=np.int64)
    acc = 0.0
    for i in range(rounds):
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        acc += float(np.argmax(probs[i % 8]))
        acc += float(np.cumsum(positions[: 64 + i % 128])[-1])
    return acc


def calibration_workload() -> None:
    """One pass of the fixed workload (see Note [Host-speed calibration]); ~40 ms on the CI VM."""
    _scheduler()
    _tokenizer()
    _server()
    _numpy_small()


# -- measuring and caching -------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _numpy_version() -> str:
    import numpy as np

    return np.__version__


def measure(repeats: int = DEFAULT_REPEATS) -> HostScore:
    """Run the workload ``repeats`` times (after one warm-up pass) on this thread."""
    if repeats < 1:
        raise BadInput("--repeats", f"must be at least 1, got {repeats}")
    calibration_workload()  # imports, caches, allocator warm-up
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        calibration_workload()
        times.append(time.thread_time() - t0)
    times.sort()
    best, median = times[0], times[len(times) // 2]
    return HostScore(score_s=best, spread=(median - best) / best, repeats=repeats, cpu_model=cpu_model(),
                     python=platform.python_version(), numpy=_numpy_version())


def machine_key() -> str:
    """This machine as host scores and host references are cached: CPU model, Python, numpy, workload version."""
    return f"{cpu_model()}|python {platform.python_version()}|numpy {_numpy_version()}|v{CALIBRATION_VERSION}"


def _cache_path() -> Path:
    from revati import paths

    return paths.revati_home() / CACHE_FILE


def cached_score(remeasure: bool = False, repeats: int = DEFAULT_REPEATS) -> HostScore:
    """This machine's score: from the cache, or measured now and cached."""
    path = _cache_path()
    key = machine_key()
    entries: dict = {}
    if path.exists():
        try:
            entries = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            entries = {}
    if not remeasure and key in entries:
        return HostScore(**entries[key])
    from revati.parquet_io import atomic_write_bytes

    score = measure(repeats)
    entries[key] = asdict(score)
    atomic_write_bytes(path, json.dumps(entries, indent=1).encode())
    return score


# -- targets -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HostTarget:
    """What ``--host-cpu`` resolved to: the name printed and stored, and the clock's factor."""
    name: str
    speed_factor: float     # host_speed: >1 means the target runs host code faster than here
    target_score_s: float | None
    here_score_s: float | None


def known_targets() -> list[str]:
    return [NATIVE, AUTO, *sorted(REFERENCE_HOSTS)]


def resolve_target(name: str, here: HostScore | None = None,
                   traced: tuple[str, float] | None = None) -> HostTarget:
    """``native``, ``auto`` or a reference name -> the factor that scales this machine's host time.

    ``traced``: for ``auto``, (label, score) of the host recorded in the target GPU's traces
    (``revati.replay.kernel_db.db.traced_host_score``), or None when no trace records one.
    """
    if name == NATIVE:
        return HostTarget(NATIVE, 1.0, None, None)
    if name == AUTO:
        if traced is None:
            return HostTarget(f"{NATIVE} (auto: no trace of the target GPU records its host)", 1.0, None, None)
        label, target = traced
    elif name in REFERENCE_HOSTS:
        label, target = name, REFERENCE_HOSTS[name].score_s
    else:
        raise BadInput("--host-cpu", f"unknown host CPU {name!r}; known: {', '.join(known_targets())}")
    here = here or cached_score()
    return HostTarget(label, here.score_s / target, target, here.score_s)


def main(argv: list[str] | None = None) -> int:
    """``python -m revati.hostcpu``: print this machine's score as JSON (what trace records)."""
    score = measure(int(argv[0]) if argv else DEFAULT_REPEATS)
    print(json.dumps(asdict(score)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
