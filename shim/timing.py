"""What one intercepted op costs on the target GPU: op mapping + predictor.

Called once per op signature (the dispatch cache keeps the answer), so it may be slow-ish.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, NamedTuple, Sequence

import torch

from revati.replay.op_mapping import GenericOp, VocabOp, map_op
from revati.replay.prediction.predictor import Predictor

_DTYPE_NAMES = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
    torch.uint8: "uint8", torch.bool: "bool",
}
for _name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
    if hasattr(torch, _name):
        _DTYPE_NAMES[getattr(torch, _name)] = "fp8"


def dtype_name(dtype: torch.dtype | None) -> str | None:
    if dtype is None:
        return None
    return _DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


class OpCost(NamedTuple):
    """What one op's kernels cost: their total predicted time, their names, and whether any of
    them was timed by the roofline fallback (counted per launch: VirtualGPUs.fallback_launches)."""
    duration_ns: int
    label: str
    fallback: bool


class OpCoster:
    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.by_label: Counter = Counter()       # label -> signatures seen
        self.unmapped: Counter = Counter()       # ops costed by the generic roofline

    def cost(self, op_name: str, in_shapes: Sequence[tuple[int, ...] | None],
             in_dtypes: Sequence[torch.dtype | None], out_shapes: Sequence[tuple[int, ...] | None] = (),
             attrs: Mapping[str, Any] | None = None) -> OpCost | None:
        """What the kernels the op launches cost, or None if it launches none."""
        mapped = map_op(op_name, in_shapes, [dtype_name(d) for d in in_dtypes], attrs, out_shapes)
        if not mapped:
            return None
        total = 0.0
        labels = []
        fallback = False
        for m in mapped:
            if isinstance(m, VocabOp):
                ns, fb = self.predictor.predict_ns_fallback(m.op, m.params_dict, m.dtype)
                total += ns
                fallback = fallback or fb
                labels.append(m.op)
            elif isinstance(m, GenericOp):
                total += self.predictor.generic_ns(m.bytes_moved, m.flops, m.dtype, label=m.label)
                fallback = True
                labels.append(m.label)
                self.unmapped[m.label] += 1
        label = "+".join(labels)
        self.by_label[label] += 1
        return OpCost(int(round(total)), label, fallback)
