"""Measured shapes answer with their measurement: the first rungs of the predictor's ladder.

Note [Prediction ladder]
========================
For an op of a fitted family the predictor answers with the first rung that applies:

1. ``measured``: the exact shape was measured on this GPU in the stack asked for (Note [Kernel
   stacks] in revati/replay/stacks.py): its median time;
2. ``interpolated``: the shape lies between two measured shapes of the same stack that differ
   only along the family's sweep axis (m for a GEMM, the KV length for decode attention, the
   prompt length for prefill): interpolation between those two neighbours, linear in the op's
   FLOPs (``benchmarks/gpu_ground_truth/compare.py`` scores it on held-out sweep points);
3. ``model``: the fitted model (revati/replay/model_fit/gridmodel.py) -- inside the range it was fitted
   on (``model``), or extrapolated within its margin (``regression``);
4. ``roofline``: beyond the model's range, counted as a fallback.

Stacks are asked in order; the first stack with an exact or bracketing measurement answers
(a measurement of another stack beats any model: stacks differ by 10-20%, a model fitted on
one stack off its grid by as much). Collectives are left to the models: their times depend on
the topology, which a shape key does not hold.

Example::

    table = MeasuredTable("h100_sxm")
    table.lookup("gemm", {"m": 100, "n": 4096, "k": 4096}, "bf16", ["torch-2.11", "vllm-0.24.0"])
    # -> (ns, "interpolated", "torch-2.11") or None
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pyarrow.parquet as pq

from revati import gpus, paths, vocab
from revati.replay import stacks

FAMILIES: dict[str, tuple[str, ...]] = {
    "gemm": ("m", "n", "k"),
    "attn_prefill": ("batch_size", "q_tokens", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
    "attn_decode": ("batch_size", "q_tokens", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
}
# The sweep axis per family: parameters that move together (prefill: q_tokens == kv_len).
SWEEP: dict[str, tuple[str, ...]] = {"gemm": ("m",), "attn_decode": ("kv_len",), "attn_prefill": ("q_tokens", "kv_len")}
DTYPE_CLASS = {"bf16": "16-bit", "fp16": "16-bit"}
_COLUMNS = ["gpu", "op", "source", "software", "dtype", "model", "duration_median_ns", "duration_mean_ns"]


def dtype_class(dtype: str) -> str:
    d = vocab.canonical_dtype(dtype)
    return DTYPE_CLASS.get(d, d)


class _StackRows:
    """One family x dtype class x stack: exact shapes, and sweeps for interpolation."""

    def __init__(self, family: str):
        self.family = family
        self.exact: dict[tuple, list[float]] = {}
        self.models: dict[tuple, set[str]] = {}   # the models a shape belongs to, where rows say

    def add(self, shape: tuple, ns: float, model: str | None = None) -> None:
        self.exact.setdefault(shape, []).append(ns)
        if model:
            self.models.setdefault(shape, set()).add(model)

    def freeze(self) -> None:
        names = FAMILIES[self.family]
        sweep = SWEEP[self.family]
        pos = [names.index(a) for a in sweep]
        rest = [i for i in range(len(names)) if i not in pos]
        self.exact_ns = {s: sorted(v)[len(v) // 2] for s, v in self.exact.items()}
        self._pos, self._rest = pos, rest
        lines: dict[tuple, list[tuple[float, float]]] = {}
        for shape, ns in self.exact_ns.items():
            if len({shape[i] for i in pos}) != 1:
                continue  # off the sweep (prefill with a cached prefix): exact answers only
            lines.setdefault(tuple(shape[i] for i in rest), []).append((float(shape[pos[0]]), ns))
        self.lines = {k: sorted(v) for k, v in lines.items()}
        self.line_x = {k: [x for x, _ in v] for k, v in self.lines.items()}

    def answer(self, shape: tuple) -> tuple[float, str] | None:
        ns = self.exact_ns.get(shape)
        if ns is not None:
            return ns, "measured"
        if len({shape[i] for i in self._pos}) != 1:
            return None
        key = tuple(shape[i] for i in self._rest)
        xs = self.line_x.get(key)
        if not xs:
            return None
        x = float(shape[self._pos[0]])
        j = bisect.bisect_left(xs, x)
        if j == 0 or j == len(xs):
            return None  # outside the measured sweep: the model's business
        (x0, t0), (x1, t1) = self.lines[key][j - 1], self.lines[key][j]
        # linear in the op's work (FLOPs): exact for time = floor + work / rate, which holds
        # along each sweep (m for a GEMM, KV length for decode, and prompt length squared for
        # causal prefill) between neighbours in the same kernel regime. Log-log interpolation
        # scored worse on the held-out sweep points of the H100 trace (prefill 23.8% vs 15.5%,
        # decode 13.0% vs 7.1%; revati.replay.prediction.ladder_report) and no better on GEMMs.
        f, f0, f1 = (self._work(shape, v) for v in (x, x0, x1))
        w = (f - f0) / (f1 - f0) if f1 > f0 else (x - x0) / (x1 - x0)
        return t0 + w * (t1 - t0), "interpolated"

    def _work(self, shape: tuple, x: float) -> float:
        names = FAMILIES[self.family]
        params = {n: float(v) for n, v in zip(names, shape)}
        for i in self._pos:
            params[names[i]] = x
        return vocab.flops(self.family, params)


class MeasuredTable:
    """Measured op_samples of one GPU, per family, dtype class and stack (Note [Prediction ladder]).

    Rows are read on the first lookup of a (family, dtype class), from every ``op_samples*``
    file under the roots, and cached under ``$REVATI_HOME/cache`` keyed by those files' names,
    sizes and times, so the processes of one emulation read the Parquet once.
    """

    def __init__(self, gpu: str, roots: Sequence[tuple[Path, bool]] | None = None, cache: bool = True):
        self.gpu = gpus.resolve_key(gpu)
        if roots is None:
            roots = [(paths.embedded_traces_dir(), False), (paths.user_traces_dir(), True)]
        self._files = [(f, own) for root, own in roots if Path(root).is_dir()
                       for f in sorted(Path(root).rglob("op_samples*.parquet")) if self._may_hold(f)]
        self._cache = cache
        self._rows: dict[tuple[str, str], dict[str, _StackRows]] = {}

    @classmethod
    def from_rows(cls, gpu: str, rows: Iterable[tuple[str, str, str, Mapping[str, float], float]]) -> "MeasuredTable":
        """A table of the given (family, dtype, stack, params, ns) only (evaluations, tests)."""
        table = cls(gpu, roots=[], cache=False)
        for family, dtype, stack, params, ns in rows:
            by_stack = table._rows.setdefault((family, dtype_class(dtype)), {})
            by_stack.setdefault(stack, _StackRows(family)).add(tuple(int(params[p]) for p in FAMILIES[family]), ns)
        for by_stack in table._rows.values():
            for r in by_stack.values():
                r.freeze()
        return table

    def _may_hold(self, f: Path) -> bool:
        # imports name their GPU in the file name (op_samples-<gpu>-<kind>.parquet)
        return not f.name.startswith("op_samples-") or f"-{self.gpu}-" in f.name

    def by_stack(self, family: str, cls: str) -> dict[str, _StackRows]:
        """The measured rows of one family and dtype class, per stack (read on first use)."""
        got = self._rows.get((family, cls))
        if got is None and not self._files:
            return {}
        if got is None:
            got = self._rows[(family, cls)] = self._read_cached(family, cls)
        return got

    def _read_cached(self, family: str, cls: str) -> dict[str, _StackRows]:
        import hashlib
        import pickle

        sig = hashlib.sha256(repr([(str(f), own, f.stat().st_size, f.stat().st_mtime_ns)
                                   for f, own in self._files]).encode()).hexdigest()[:16]
        path = paths.revati_home() / "cache" / f"measured-{self.gpu}-{family}-{cls}-{sig}.pkl"
        if self._cache and path.is_file():
            try:
                return pickle.loads(path.read_bytes())
            except Exception:  # noqa: BLE001 -- a damaged cache is rebuilt
                pass
        rows: dict[str, _StackRows] = {}
        for f, own in self._files:
            _read(f, self.gpu, family, cls, own, rows)
        for r in rows.values():
            r.freeze()
        if self._cache:
            try:
                from revati.parquet_io import atomic_write_bytes

                for stale in path.parent.glob(f"measured-{self.gpu}-{family}-{cls}-*.pkl"):
                    stale.unlink(missing_ok=True)   # built from files that have changed since
                atomic_write_bytes(path, pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                pass  # a read-only home: answer without the cache
        return rows

    def stacks(self, family: str, dtype: str = "bf16") -> list[str]:
        return sorted(self.by_stack(family, dtype_class(dtype)))

    def lookup(self, family: str, params: Mapping[str, float], dtype: str,
               order: Sequence[str] | None = None) -> tuple[float, str, str] | None:
        """(ns, "measured" | "interpolated", stack) from the first stack in ``order`` (default:
        every stack, :func:`revati.replay.stacks.order`) that measured this shape or brackets
        it; None when none does."""
        names = FAMILIES.get(family)
        if names is None:
            return None
        try:
            shape = tuple(int(params[p]) for p in names)
        except (KeyError, TypeError, ValueError):
            return None
        by_stack = self.by_stack(family, dtype_class(dtype))
        for stack in (order if order is not None else stacks.order(list(by_stack))):
            rows = by_stack.get(stack)
            if rows is None:
                continue
            got = rows.answer(shape)
            if got is not None:
                return got[0], got[1], stack
        return None


def _read(path: Path, gpu_key: str, family: str, cls: str, own: bool, rows: dict) -> None:
    names = set(pq.read_schema(path).names)
    params = FAMILIES[family]
    if not {"op", "gpu", *params} <= names:
        return
    dtypes = [d for d, c in DTYPE_CLASS.items() if c == cls] or [cls]
    table = pq.read_table(path, columns=[c for c in _COLUMNS + list(params) if c in names],
                          filters=[("op", "=", family), ("dtype", "in", dtypes)])
    if table.num_rows == 0:
        return
    gpu_ok = {g: _is_gpu(g, gpu_key) for g in set(table["gpu"].to_pylist())}
    cols = {c: table[c].to_pylist() for c in table.column_names}
    median = cols.get("duration_median_ns") or [None] * table.num_rows
    mean = cols.get("duration_mean_ns") or [None] * table.num_rows
    stack_names: dict[tuple, str] = {}
    for i in range(table.num_rows):
        if not gpu_ok.get(cols["gpu"][i]) or dtype_class(cols["dtype"][i] or "bf16") != cls:
            continue
        ns = median[i] or mean[i]
        values = [cols[p][i] for p in params]
        if not ns or ns <= 0 or any(v is None for v in values):
            continue
        sk = (cols["source"][i], cols["software"][i])
        stack = stack_names.get(sk)
        if stack is None:
            stack = stack_names[sk] = stacks.stack_of(sk[0] or "", sk[1] or "", own)
        model = cols["model"][i] if "model" in cols else None
        rows.setdefault(stack, _StackRows(family)).add(tuple(int(v) for v in values), float(ns), model)
def _is_gpu(name: str | None, key: str) -> bool:
    if not name:
        return False
    try:
        return gpus.resolve_key(name) == key
    except Exception:  # noqa: BLE001 -- a GPU the spec table does not know is not this one
        return False
