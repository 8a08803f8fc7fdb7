"""Values for device->host copies of tensors whose values revati does not know.

# Note [Device-to-host value policy]
# Virtual tensors carry no data. Small tensors carry real CPU values when every input had
# values (positions, masks, lengths, token ids copied from the host): those are exact. For a
# small integer or boolean result computed from value-less inputs (argmax/multinomial over
# logits, comparisons of logits), this policy supplies deterministic, well-formed values:
#   - sampling-like ops (argmax, argmin, multinomial, topk/sort indices, max indices) give
#     token ids in range: a fixed id if configured, otherwise a deterministic sequence inside
#     [vocab/4, vocab/2), never one of the configured EOS ids -- so generation runs exactly to
#     its max_new_tokens, as a benchmark with ignore_eos does on a real GPU;
#   - other integer results give 0 and boolean results False (nothing is NaN, no request is
#     finished early, masks select nothing extra);
#   - floating-point results have no value; a read (.item(), .tolist(), .cpu()) gives zeros.
# Zeros are not a safe default for token ids: engines wait for a sampled token to be non-zero
# (vLLM's scheduler hung with num_sampled_tokens == 0 in the spike).
"""

from __future__ import annotations

import torch

SAMPLING_OPS = frozenset({"argmax", "argmin", "multinomial", "topk", "sort", "max", "min", "argsort"})


class ValuePolicy:
    def __init__(self, token_id: int | None = None, eos_token_ids: list[int] | None = None):
        self.token_id = token_id
        self.eos = set(eos_token_ids or [])
        self._counter = 0
        self.filled = 0

    def token_ids(self, shape: tuple[int, ...], vocab: int) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= s
        if self.token_id is not None:
            ids = [self.token_id] * n
        else:
            lo = max(vocab // 4, 1)
            span = max(vocab // 2 - lo, 1)
            ids = []
            for _ in range(n):
                self._counter += 1
                tok = lo + (self._counter * 7919) % span
                while tok in self.eos:
                    tok = lo + (tok - lo + 1) % span
                ids.append(tok)
        return torch.tensor(ids, dtype=torch.int64).reshape(shape)

    def fill(self, op_name: str, shape: tuple[int, ...], dtype: torch.dtype,
             input_shapes: list[tuple[int, ...]], out_index: int) -> torch.Tensor | None:
        """A value for output ``out_index`` of ``op_name``, or None (floating point)."""
        self.filled += 1
        if dtype == torch.bool:
            return torch.zeros(shape, dtype=torch.bool)
        if dtype.is_floating_point or dtype.is_complex:
            return None
        base = op_name.split("::")[-1].split(".")[0]
        is_index_output = base in ("argmax", "argmin", "multinomial", "argsort") or (
            base in ("topk", "sort", "max", "min") and out_index == 1)
        if is_index_output and input_shapes and input_shapes[0]:
            vocab = input_shapes[0][-1]
            return self.token_ids(shape, vocab).to(dtype)
        return torch.zeros(shape, dtype=dtype)

    def read(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """What a device->host read of a tensor with no value returns."""
        return torch.zeros(shape, dtype=dtype)
