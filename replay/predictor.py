"""The predictor the shim asks at emulation time: (op family, shape, dtype, gpu) -> ns.

Lookups are cached per (family, params, dtype). Ops without a fitted model -- no model for
the family or dtype, or a shape far outside what the model was fitted on -- fall back to the
roofline estimate and are counted in ``stats.fallbacks``: reported, never silent.

:func:`load_predictor` builds one from the fitted models (``revati models fit``): the user's
own under ``$REVATI_HOME/models/<gpu>`` if any, else the embedded default.

Example::

    from revati.replay.predictor import load_predictor
    p = load_predictor("h100")
    p.predict_ns("gemm", {"m": 4096, "n": 4096, "k": 4096}, "bf16")   # ns
    print(p.stats.line())
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from revati import gpus, vocab
from revati.gpus import GPUSpec
from revati.replay import features, roofline

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
    fallbacks: Counter = field(default_factory=Counter)   # family -> uncached fallback lookups
    modelled: Counter = field(default_factory=Counter)    # family -> uncached model lookups

    @property
    def fallback_count(self) -> int:
        return sum(self.fallbacks.values())

    def line(self) -> str:
        hit = self.cache_hits / self.calls if self.calls else 0.0
        fb = ", ".join(f"{k}={v}" for k, v in sorted(self.fallbacks.items())) or "none"
        return f"predictor: {self.calls} calls, {hit:.1%} cached, roofline fallbacks: {fb}"


class Predictor:
    """Predicts op durations for one GPU from fitted family models, else the roofline."""

    def __init__(self, gpu: str | GPUSpec, models: Mapping[str, FamilyModel] | None = None,
                 roofline_params: roofline.RooflineParams = roofline.DEFAULT):
        self.spec = gpu if isinstance(gpu, GPUSpec) else gpus.get(gpu)
        self.models: dict[str, FamilyModel] = dict(models or {})
        self.roofline_params = roofline_params
        self.stats = PredictorStats()
        self._cache: dict[tuple, float] = {}
        self.models_dir = None  # where load_predictor found the models, if it did

    def predict_ns(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> float:
        self.stats.calls += 1
        key = (op, tuple(sorted(params.items())), dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        value = self._predict_uncached(op, params, vocab.canonical_dtype(dtype))
        self._cache[key] = value
        return value

    def _predict_uncached(self, op: str, params: Mapping[str, float], dtype: str) -> float:
        model = self.models.get(op)
        if model is not None:
            value = model(params, dtype)
            if value is not None:
                self.stats.modelled[op] += 1
                return float(value)
        self.stats.fallbacks[op] += 1
        return roofline.roofline_ns(self.spec, op, params, dtype, self.roofline_params)

    def predict_detail(self, op: str, params: Mapping[str, float], dtype: str = "bf16") -> tuple[float, str]:
        """Uncached prediction and what made it: ``"model"`` or ``"roofline"`` (counted as usual)."""
        self.stats.calls += 1
        before = self.stats.fallbacks[op]
        value = self._predict_uncached(op, params, vocab.canonical_dtype(dtype))
        return value, ("roofline" if self.stats.fallbacks[op] > before else "model")

    def generic_ns(self, bytes_moved: float, flops: float = 0.0, dtype: str = "bf16",
                   label: str = "generic") -> float:
        """An op outside the vocabulary, known by its bytes and FLOPs: always a counted fallback."""
        self.stats.calls += 1
        key = ("__generic__", label, bytes_moved, flops, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        self.stats.fallbacks[label] += 1
        value = roofline.generic_ns(self.spec, bytes_moved, flops, dtype, self.roofline_params)
        self._cache[key] = value
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
        entry = self._by_dtype.get(dtype)
        if entry is None:
            return None
        axes, evaluate, _ = entry
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
        return evaluate(values, work, nbytes)


def load_predictor(gpu: str, models_dir=None, roofline_params: roofline.RooflineParams = roofline.DEFAULT) -> Predictor:
    """A Predictor for ``gpu`` with its fitted models loaded.

    ``models_dir``: a folder holding ``<gpu>/models.parquet`` (or ``models.parquet`` itself),
    used alone. Without it: the embedded default, with the user's own models from
    ``$REVATI_HOME/models/<gpu>`` replacing it family by family and dtype by dtype. A GPU
    unknown to the spec table raises UnknownGPU; a known GPU without fitted models gets a
    predictor that answers every op from the roofline (and counts it).
    """
    from revati.errors import ModelNotFound
    from revati.replay import model_store

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
    predictor = Predictor(spec, {f: FamilyModels(f, ms) for f, ms in by_family.items()}, roofline_params)
    predictor.models_dir = folders[-1] if folders else None
    return predictor
