"""The predictor the shim asks at emulation time: (op family, shape, dtype, gpu) -> ns.

Lookups are cached per (family, params, dtype). Ops without a fitted model fall back to the
roofline estimate and are counted in ``stats.fallbacks`` -- reported, never silent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from revati import gpus, vocab
from revati.gpus import GPUSpec
from revati.replay import roofline

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
