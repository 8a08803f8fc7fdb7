"""The predictor the shim asks at emulation time: (op family, shape, dtype, gpu) -> ns.

Lookups are cached per (family, params, dtype). Ops without a fitted model -- no model for
the family or dtype, or a shape far outside what the model was fitted on -- fall back to the
roofline estimate and are counted in ``stats.fallbacks``: reported, never silent.

:func:`load_predictor` builds one from the fitted models (``revati models fit``): the user's
own under ``$REVATI_HOME/models/<gpu>`` if any, else the embedded default.

Example::

    from revati.replay.prediction.predictor import load_predictor
    p = load_predictor("h100")
    p.predict_ns("gemm", {"m": 4096, "n": 4096, "k": 4096}, "bf16")   # ns
    print(p.stats.line())
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from revati import gpus, vocab
from revati.gpus import GPUSpec
from revati.replay import features, roofline
from revati.replay.prediction.measured import FAMILIES as MEASURED_FAMILIES

# Dtypes that run on the same units at the same rate: a model fitted on one answers for the
# other (fp16 and bf16 tensor-core GEMMs and attention are equally fast).
SAME_SPEED_DTYPES: dict[str, tuple[str, ...]] = {"fp16": ("bf16",), "bf16": ("fp16",)}

# A fitted model for one family: params (family's parameter names) and dtype -> ns, or None
# when the shape/dtype is outside what the model may answer for.
FamilyModel = Callable[[Mapping[str, float], str], "float | None"]


@dataclass
class PredictorStats:
    calls: int = 0
    cache_hits: int = 0
    fallbacks: Counter = field(default_factory=Counter)   # family -> shapes the roofline answered
    modelled: Counter = field(default_factory=Counter)    # family -> uncached model lookups
    answered: Counter = field(default_factory=Counter)    # rung of the ladder -> uncached answers

    @property
    def fallback_count(self) -> int:
        """Distinct shapes the roofline answered (launches of them: VirtualGPUs.fallback_launches)."""
        return sum(self.fallbacks.values())

    def line(self) -> str:
        hit = self.cache_hits / self.calls if self.calls else 0.0
        fb = ", ".join(f"{k}={v}" for k, v in sorted(self.fallbacks.items())) or "none"
        return f"predictor: {self.calls} calls, {hit:.1%} cached, roofline fallbacks: {fb}"


# What answered a prediction (Note [Prediction ladder] in revati/replay/prediction/measured.py).
MEASURED, INTERPOLATED, MODEL, REGRESSION, ROOFLINE = "measured", "interpolated", "model", "regression", "roofline"


def running_engine() -> str:
    """The engine whose kernels an emulation runs: vLLM once this process imported it, else
    PyTorch (HF transformers and plain PyTorch programs). Note [Kernel stacks]."""
    import sys

    return "vllm" if "vllm" in sys.modules else "torch"


class Predictor:
    """Predicts op durations for one GPU: measured shapes, fitted family models, else the roofline.

    ``measured``: a :class:`revati.replay.prediction.measured.MeasuredTable` (None: models and roofline
    only). ``kernel_stack``: the stack asked first after the user's own (``--kernel-stack``);
    ``engine``: ``"vllm"``, ``"torch"`` or a callable answering it when first needed (the
    default looks at what the process imported). Note [Kernel stacks], Note [Prediction ladder].
    """

    def __init__(self, gpu: str | GPUSpec, models: Mapping[str, FamilyModel] | None = None,
                 roofline_params: roofline.RooflineParams = roofline.DEFAULT, measured=None,
                 kernel_stack: str | None = None, engine: "str | Callable[[], str]" = running_engine):
        self.spec = gpu if isinstance(gpu, GPUSpec) else gpus.get(gpu)
        self.models: dict[str, FamilyModel] = dict(models or {})
        self.roofline_params = roofline_params
        self.measured = measured
        self.kernel_stack = kernel_stack
        self.engine = engine
        self.stats = PredictorStats()
        self._cache: dict[tuple, tuple[float, bool]] = {}   # shape -> (ns, roofline fallback)
        self._orders: dict[tuple[str, str], list[str]] = {}
        self.models_dir = None  # where load_predictor found the models, if it did

    def predict_ns(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> float:
        return self.predict_ns_fallback(op, params, dtype)[0]

    def predict_ns_fallback(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> tuple[float, bool]:
        """(ns, whether the roofline fallback answered), cached per shape."""
        self.stats.calls += 1
        key = (op, tuple(sorted(params.items())), dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        value, rung, _ = self._answer(op, params, vocab.canonical_dtype(dtype))
        got = self._cache[key] = (value, rung == ROOFLINE)
        return got

    def set_stack_order(self, op: str, dtype: str, order: list[str]) -> None:
        """Ask the measured rungs for ``op`` these stacks only, in this order (evaluations)."""
        from revati.replay.prediction import measured as measured_mod

        self._orders[(op, measured_mod.dtype_class(dtype))] = list(order)

    def stack_order(self, op: str, dtype: str) -> list[str]:
        """The stacks the measured rungs ask, in order (Note [Kernel stacks])."""
        from revati.replay.prediction import measured as measured_mod
        from revati.replay import stacks

        key = (op, measured_mod.dtype_class(dtype))
        got = self._orders.get(key)
        if got is None:
            engine = self.engine() if callable(self.engine) else self.engine
            got = self._orders[key] = stacks.order(self.measured.stacks(op, dtype), engine, self.kernel_stack)
        return got

    def _answer(self, op: str, params: Mapping[str, float], dtype: str) -> tuple[float, str, str]:
        """(ns, rung, stack or ""): the first rung of the ladder that answers."""
        if self.measured is not None and op in MEASURED_FAMILIES:
            got = self.measured.lookup(op, params, dtype, self.stack_order(op, dtype))
            if got is not None:
                self.stats.answered[got[1]] += 1
                return got[0], got[1], got[2]
        model = self.models.get(op)
        if model is not None:
            answer = getattr(model, "answer", None)
            value, inside = answer(params, dtype) if answer is not None else (model(params, dtype), True)
            if value is not None:
                self.stats.modelled[op] += 1
                rung = MODEL if inside else REGRESSION
                self.stats.answered[rung] += 1
                stack_for = getattr(model, "stack_for", None)
                return float(value), rung, stack_for(dtype) if stack_for is not None else ""
        self.stats.fallbacks[op] += 1
        self.stats.answered[ROOFLINE] += 1
        return roofline.roofline_ns(self.spec, op, params, dtype, self.roofline_params), ROOFLINE, ""

    def _predict_uncached(self, op: str, params: Mapping[str, float], dtype: str) -> float:
        return self._answer(op, params, dtype)[0]

    def predict_detail(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> tuple[float, str]:
        """Uncached prediction and the rung that made it: ``measured``, ``interpolated``,
        ``model``, ``regression`` or ``roofline`` (counted as usual)."""
        return self.predict_full(op, params, dtype)[:2]

    def predict_full(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> tuple[float, str, str]:
        """(ns, rung, stack) uncached: which stack's measurement or model answered ("" for the roofline)."""
        self.stats.calls += 1
        return self._answer(op, params, vocab.canonical_dtype(dtype))

    def generic_ns(self, bytes_moved: float, flops: float = 0.0, dtype: str = "bf16",
                   label: str = "generic") -> float:
        """An op outside the vocabulary, known by its bytes and FLOPs: always a counted fallback."""
        self.stats.calls += 1
        key = ("__generic__", label, bytes_moved, flops, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit[0]
        self.stats.fallbacks[label] += 1
        value = roofline.generic_ns(self.spec, bytes_moved, flops, dtype, self.roofline_params)
        self._cache[key] = (value, True)
        return value


class FamilyModels:
    """The fitted models of one family for one GPU, as one fast callable(params, dtype)."""

    def __init__(self, family: str, stored: list):
        self.family = family
        self._by_dtype: dict[str, tuple] = {}
        # A model fitted on exactly the asked dtype wins over one that merely serves it.
        for sm in sorted(stored, key=lambda m: 0 if m.dtype in m.serves_dtypes else 1):
            entry = (tuple((a.kind, a.num, a.den, a.threshold) for a in sm.axes), sm.model.compile(), sm)
            for d in (sm.dtype, *sm.serves_dtypes):
                if d == sm.dtype or d not in self._by_dtype:
                    self._by_dtype[d] = entry
        for d, others in SAME_SPEED_DTYPES.items():
            if d not in self._by_dtype:
                for o in others:
                    if o in self._by_dtype:
                        self._by_dtype[d] = self._by_dtype[o]
                        break

    @property
    def dtypes(self) -> list[str]:
        return sorted(self._by_dtype)

    def stored_for(self, dtype: str):
        entry = self._by_dtype.get(vocab.canonical_dtype(dtype))
        return entry[2] if entry else None

    def __call__(self, params: Mapping[str, float], dtype: str) -> "float | None":
        return self.answer(params, dtype)[0]

    def stack_for(self, dtype: str) -> str:
        sm = self.stored_for(dtype)
        if sm is None:
            return ""
        from revati.replay import stacks

        return stacks.stack_of(sm.info.get("source") or "", sm.info.get("software") or "")

    def answer(self, params: Mapping[str, float], dtype: str) -> "tuple[float | None, bool]":
        """(ns or None when refused, whether the shape lies inside the range the model was fitted on)."""
        entry = self._by_dtype.get(dtype)
        if entry is None:
            return None, False
        axes, evaluate, sm = entry
        nbytes = vocab.bytes_moved(self.family, params, dtype)  # UnsupportedOp for a missing parameter
        work = features.base_work(self.family, params)
        values = []
        for kind, num, den, threshold in axes:
            if kind == "same":
                values.append(1.0 if params[num[0]] == params[num[1]] else 2.0)
                continue
            v = 1.0
            for p in num:
                v *= params[p]
            for p in den:
                v /= params[p]
            if kind == "below":
                v = 1.0 if v < threshold else 2.0
            values.append(v)
        value = evaluate(values, work, nbytes)
        if value is None:
            return None, False
        m = sm.model
        inside = all(v > 0 and lo - 1e-9 <= math.log(v) <= hi + 1e-9
                     for v, lo, hi in zip(values, m.range_lo.tolist(), m.range_hi.tolist()))
        return value, inside


def load_predictor(gpu: str, models_dir=None, roofline_params: roofline.RooflineParams = roofline.DEFAULT,
                   measured: bool | None = None, kernel_stack: str | None = None,
                   engine: "str | Callable[[], str]" = running_engine) -> Predictor:
    """A Predictor for ``gpu`` with its fitted models loaded.

    ``models_dir``: a folder holding ``<gpu>/models.parquet`` (or ``models.parquet`` itself),
    used alone. Without it: the embedded default, with the user's own models from
    ``$REVATI_HOME/models/<gpu>`` replacing it family by family and dtype by dtype. A GPU
    unknown to the spec table raises UnknownGPU; a known GPU without fitted models gets a
    predictor that answers every op from the roofline (and counts it).

    ``measured``: whether measured shapes answer first (Note [Prediction ladder]); by default
    yes, unless ``models_dir`` asks for those models alone. ``kernel_stack`` / ``engine``: see
    :class:`Predictor`.
    """
    from revati.errors import ModelNotFound
    from revati.replay.model_fit import model_store

    spec = gpus.get(gpu)
    if models_dir is not None:
        folder = model_store.find_models_dir(spec.key, models_dir)
        if folder is None:
            raise ModelNotFound(spec.key, models_dir)
        folders = [folder]
    else:
        folders = model_store.model_dirs(spec.key)
    chosen: dict[tuple[str, str], object] = {}
    for folder in folders:                      # later folders (the user's) replace earlier ones
        for sm in model_store.load_dir(folder):
            if sm.gpu == spec.key:              # another GPU's models answer nothing for this one
                chosen[(sm.family, sm.dtype)] = sm
    by_family: dict[str, list] = {}
    for (family, _dtype), sm in chosen.items():
        by_family.setdefault(family, []).append(sm)
    table = None
    if measured if measured is not None else models_dir is None:
        from revati.replay.prediction.measured import MeasuredTable

        table = MeasuredTable(spec.key)
    predictor = Predictor(spec, {f: FamilyModels(f, ms) for f, ms in by_family.items()}, roofline_params,
                          measured=table, kernel_stack=kernel_stack, engine=engine)
    predictor.models_dir = folders[-1] if folders else None
    return predictor
