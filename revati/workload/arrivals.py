"""Arrival processes: when each request of a workload is sent, as offsets in seconds.

Semantics follow ``vllm bench serve`` so that the same flags mean the same traffic:

- ``request_rate = inf``: every request at t = 0 (with ``max_concurrency`` this is the closed
  loop of "fixed concurrency": the client keeps that many requests in flight).
- otherwise inter-arrival gaps are gamma distributed with shape = ``burstiness`` and
  scale = 1 / (rate * burstiness): mean gap 1/rate, coefficient of variation
  1/sqrt(burstiness). ``burstiness = 1`` is a Poisson process; < 1 is burstier, > 1 smoother,
  ``inf`` is a constant gap.
- the first request waits one gap too (vLLM samples a delay for every request), and the gaps
  are rescaled so that the last arrival is exactly at ``n / rate``: the measured throughput then
  does not depend on the seed's luck (vLLM does the same since 2025; ``rescale_total=False``
  keeps the raw draws).

Example::

    import numpy as np
    from revati.workload.arrivals import GammaArrivals
    offsets = GammaArrivals(rate=4.0, burstiness=0.5).offsets_s(100, np.random.default_rng(0))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GammaArrivals:
    """Open-loop arrivals at ``rate`` requests/s; ``burstiness`` = 1 is Poisson."""

    rate: float
    burstiness: float = 1.0
    rescale_total: bool = True

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"request rate must be > 0 (use inf for all-at-once), got {self.rate}")
        if not self.burstiness > 0:
            raise ValueError(f"burstiness must be > 0, got {self.burstiness}")

    @property
    def cv(self) -> float:
        """Coefficient of variation of the inter-arrival gaps."""
        return 0.0 if math.isinf(self.burstiness) else 1.0 / math.sqrt(self.burstiness)

    def offsets_s(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if n <= 0:
            return np.zeros(0)
        if math.isinf(self.rate):
            return np.zeros(n)
        if math.isinf(self.burstiness):
            gaps = np.full(n, 1.0 / self.rate)
        else:
            gaps = rng.gamma(shape=self.burstiness, scale=1.0 / (self.rate * self.burstiness), size=n)
        offsets = np.cumsum(gaps)
        if self.rescale_total and offsets[-1] > 0:
            offsets *= (n / self.rate) / offsets[-1]
        return offsets


def PoissonArrivals(rate: float, rescale_total: bool = True) -> GammaArrivals:  # noqa: N802 - a constructor
    """Poisson arrivals: exponential gaps, CV 1."""
    return GammaArrivals(rate=rate, burstiness=1.0, rescale_total=rescale_total)


@dataclass(frozen=True)
class AllAtOnce:
    """Every request at t = 0 (``--request-rate inf``)."""

    def offsets_s(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(max(n, 0))


@dataclass(frozen=True)
class FixedConcurrency:
    """A closed loop: all requests are ready at t = 0 and the client keeps ``concurrency`` in
    flight (vLLM: ``--request-rate inf --max-concurrency N``)."""

    concurrency: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")

    def offsets_s(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(max(n, 0))


def from_rate(request_rate: float, burstiness: float = 1.0) -> GammaArrivals | AllAtOnce:
    """The arrival process ``vllm bench serve --request-rate R --burstiness B`` uses."""
    if math.isinf(request_rate):
        return AllAtOnce()
    return GammaArrivals(rate=request_rate, burstiness=burstiness)
