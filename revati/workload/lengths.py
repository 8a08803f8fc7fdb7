"""Request-length distributions: how many prompt tokens and output tokens each request has.

Each distribution draws ``(input_tokens, output_tokens)`` arrays from a numpy Generator, so a
seed fixes the workload.

- :class:`FixedLengths` -- every request the same.
- :class:`UniformLengths` -- integers uniform in ``[low, high]``; :func:`uniform_around` gives
  ``vllm bench serve --dataset-name random``'s ``--random-range-ratio`` semantics
  (``[len * (1 - r), len * (1 + r)]``).
- :class:`LogNormalLengths` -- independent lognormals with given means, truncated by the
  pruning rule vLLM applies to ShareGPT; :data:`SHAREGPT_LIKE` is the instance fitted to the
  published ShareGPT means (see its comment for the sources and what is assumed).
- :class:`EmpiricalLengths` -- resampling (input, output) pairs of a real trace, e.g. the Azure
  2023 conversation trace shipped in ``traces/workloads/`` (:func:`azure_lengths`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FixedLengths:
    input_tokens: int
    output_tokens: int

    def __post_init__(self) -> None:
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise ValueError(f"lengths must be >= 1, got input={self.input_tokens} output={self.output_tokens}")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return np.full(n, self.input_tokens, dtype=np.int64), np.full(n, self.output_tokens, dtype=np.int64)


@dataclass(frozen=True)
class UniformLengths:
    """Integers uniform in the closed ranges ``[input_low, input_high]`` and ``[output_low, output_high]``."""

    input_low: int
    input_high: int
    output_low: int
    output_high: int

    def __post_init__(self) -> None:
        if not 1 <= self.input_low <= self.input_high:
            raise ValueError(f"need 1 <= input_low <= input_high, got [{self.input_low}, {self.input_high}]")
        if not 1 <= self.output_low <= self.output_high:
            raise ValueError(f"need 1 <= output_low <= output_high, got [{self.output_low}, {self.output_high}]")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs = rng.integers(self.input_low, self.input_high + 1, size=n, dtype=np.int64)
        outputs = rng.integers(self.output_low, self.output_high + 1, size=n, dtype=np.int64)
        return inputs, outputs


def uniform_around(input_len: int, output_len: int, range_ratio: float) -> FixedLengths | UniformLengths:
    """vLLM's random dataset: lengths uniform in ``[len * (1 - r), len * (1 + r)]``, r in [0, 1)."""
    if not 0 <= range_ratio < 1:
        raise ValueError(f"range ratio must be in [0, 1), got {range_ratio}")
    if range_ratio == 0:
        return FixedLengths(input_len, output_len)
    return UniformLengths(
        max(1, math.floor(input_len * (1 - range_ratio))), math.ceil(input_len * (1 + range_ratio)),
        max(1, math.floor(output_len * (1 - range_ratio))), math.ceil(output_len * (1 + range_ratio)),
    )


@dataclass(frozen=True)
class LogNormalLengths:
    """Independent lognormal input and output lengths with the given means and log-space sigmas,
    rounded and kept only if they pass vLLM's ShareGPT pruning rule: both >= ``min_tokens``,
    input <= ``max_input_tokens``, input + output <= ``max_total_tokens`` (rejected pairs are
    redrawn, so the kept means are below the untruncated ones)."""

    input_mean: float
    output_mean: float
    input_sigma: float
    output_sigma: float
    min_tokens: int = 4
    max_input_tokens: int = 1024
    max_total_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.input_mean <= 0 or self.output_mean <= 0:
            raise ValueError("means must be > 0")
        if self.input_sigma <= 0 or self.output_sigma <= 0:
            raise ValueError("sigmas must be > 0")
        if not self.min_tokens <= self.max_input_tokens < self.max_total_tokens:
            raise ValueError("need min_tokens <= max_input_tokens < max_total_tokens")

    def _draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        # mean of a lognormal = exp(mu + sigma^2 / 2)
        mu_in = math.log(self.input_mean) - self.input_sigma**2 / 2
        mu_out = math.log(self.output_mean) - self.output_sigma**2 / 2
        inputs = np.rint(rng.lognormal(mu_in, self.input_sigma, size=n)).astype(np.int64)
        outputs = np.rint(rng.lognormal(mu_out, self.output_sigma, size=n)).astype(np.int64)
        return inputs, outputs

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        kept_in: list[np.ndarray] = []
        kept_out: list[np.ndarray] = []
        have = 0
        while have < n:
            inputs, outputs = self._draw(max(2 * (n - have), 16), rng)
            ok = (
                (inputs >= self.min_tokens) & (outputs >= self.min_tokens)
                & (inputs <= self.max_input_tokens) & (inputs + outputs <= self.max_total_tokens)
            )
            kept_in.append(inputs[ok])
            kept_out.append(outputs[ok])
            have += int(ok.sum())
        return np.concatenate(kept_in)[:n], np.concatenate(kept_out)[:n]


# ShareGPT-like lengths. Facts used:
# - means: 161.31 input and 337.99 output tokens per request for ShareGPT (Kwon et al., "Efficient
#   Memory Management for Large Language Model Serving with PagedAttention", SOSP 2023, Fig. 11a,
#   as quoted from memory: the figure could not be re-read in the session that wrote this);
# - pruning: vLLM's ShareGPT sampler keeps pairs with both lengths >= 4, input <= 1024 and
#   input + output <= 2048 (vllm/benchmarks/datasets.py, is_valid_sequence defaults).
# Assumed, not measured: lognormal shapes with sigma 1.0 (input) and 0.8 (output), independent.
# When real lengths matter, prefer the Azure traces (EmpiricalLengths), which are measured data.
SHAREGPT_LIKE = LogNormalLengths(input_mean=161.31, output_mean=337.99, input_sigma=1.0, output_sigma=0.8)


@dataclass(frozen=True)
class EmpiricalLengths:
    """Resample (input, output) pairs, with replacement, from recorded requests."""

    input_tokens: tuple[int, ...]
    output_tokens: tuple[int, ...]
    name: str = field(default="empirical", compare=False)

    def __post_init__(self) -> None:
        if len(self.input_tokens) != len(self.output_tokens) or not self.input_tokens:
            raise ValueError("need equally many (and at least one) input and output lengths")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self.input_tokens), size=n)
        inputs = np.asarray(self.input_tokens, dtype=np.int64)[idx]
        outputs = np.asarray(self.output_tokens, dtype=np.int64)[idx]
        # A recorded request may have generated 0 tokens; a benchmark request needs >= 1.
        return np.maximum(inputs, 1), np.maximum(outputs, 1)


def azure_lengths(kind: str = "conv") -> EmpiricalLengths:
    """The (input, output) pairs of the shipped Azure 2023 trace (``conv`` or ``code``)."""
    return azure_lengths_from(f"azure_{kind}_2023")


def azure_lengths_from(name_or_path: str) -> EmpiricalLengths:
    """The (input, output) pairs of any ``request_trace`` (shipped name or Parquet path)."""
    from revati.workload.traces import load_request_trace

    table = load_request_trace(name_or_path)
    return EmpiricalLengths(
        tuple(table.column("input_tokens").to_pylist()),
        tuple(table.column("output_tokens").to_pylist()),
        name=str(name_or_path),
    )
