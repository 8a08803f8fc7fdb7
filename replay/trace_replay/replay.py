"""Re-time a traced run's op sequence with the predictor; compare with what the GPU measured.

The model's error on real programs: every unit of the traced op tree (replay/kernel_db/trace_ops.py) is
predicted for the target GPU (:class:`revati.replay.prediction.predictor.Predictor`: fitted family models,
else the roofline, fallbacks counted) and set against the device time its kernels took, per op
family and in total. A CPU-only trace has no device time: only predictions are reported, and
the report says so.

Example::

    from revati.replay.trace_replay.replay import replay_run
    report = replay_run("traces/hf-generate-h100", gpu="h100")
    print(report.total_predicted_ns, report.total_measured_ns)
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from revati import gpus
from revati.errors import BadInput
from revati.replay.op_mapping import GenericOp, VocabOp
from revati.replay.prediction.predictor import Predictor
from revati.replay.kernel_db.trace_ops import Unit, load_trace_ops
from revati.run_folder import check_run_dir, read_run_table

NO_MEASURED = "the trace has no device timing (recorded without a GPU): predicted times only"


@dataclass
class FamilyResult:
    family: str
    ops: int
    predicted_ns: float
    measured_ns: float | None

    @property
    def error_pct(self) -> float | None:
        if self.measured_ns is None or self.measured_ns <= 0:
            return None
        return (self.predicted_ns - self.measured_ns) / self.measured_ns * 100.0


@dataclass
class ReplayReport:
    run_id: str
    gpu: str
    traced_gpu: str | None
    measured_available: bool
    families: list[FamilyResult]
    total_predicted_ns: float
    total_measured_ns: float | None
    unattributed_measured_ns: float | None
    units: int
    ops_in_trace: int
    roofline_fallbacks: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def total_error_pct(self) -> float | None:
        if self.total_measured_ns is None or self.total_measured_ns <= 0:
            return None
        return (self.total_predicted_ns - self.total_measured_ns) / self.total_measured_ns * 100.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_error_pct"] = self.total_error_pct
        for fam, res in zip(out["families"], self.families):
            fam["error_pct"] = res.error_pct
        return out


def predict_unit(predictor: Predictor, unit: Unit) -> float:
    total = 0.0
    for m in unit.mapped:
        if isinstance(m, VocabOp):
            total += predictor.predict_ns(m.op, m.params_dict, m.dtype)
        elif isinstance(m, GenericOp):
            total += predictor.generic_ns(m.bytes_moved, m.flops, m.dtype, m.label)
    return total


def replay_run(run_dir: str | Path, gpu: str | None = None,
               predictor_factory: Callable[[str], Predictor] | None = None) -> ReplayReport:
    """Predict every unit of the run on ``gpu`` (default: the GPU it was traced on)."""
    run_dir = check_run_dir(Path(run_dir))
    runs = read_run_table(run_dir, "runs").to_pylist()
    run = runs[0] if runs else {}
    traced_gpu = run.get("gpu")
    target = gpu or traced_gpu
    if target is None:
        raise BadInput(run_dir, "the trace records no known GPU; say which to predict for with --gpu")
    spec_key = gpus.resolve_key(target)
    predictor = predictor_factory(spec_key) if predictor_factory else Predictor(spec_key)
    trace_ops = load_trace_ops(run_dir)

    notes = []
    measured_ok = trace_ops.device_timing
    if not measured_ok:
        notes.append(NO_MEASURED)
    elif traced_gpu is not None and traced_gpu != spec_key:
        notes.append(f"measured on {traced_gpu}, predicted for {spec_key}: the error mixes model error and GPU difference")
    elif traced_gpu is None:
        notes.append(f"the traced GPU ({run.get('gpu_name')}) is not in revati's GPU table")

    per_family: dict[str, list] = defaultdict(lambda: [0, 0.0, 0.0])
    for unit in trace_ops.units:
        predicted = predict_unit(predictor, unit)
        agg = per_family[unit.family]
        agg[0] += 1
        agg[1] += predicted
        agg[2] += unit.measured_ns or 0.0
    families = [FamilyResult(name, count, pred, meas if measured_ok else None)
                for name, (count, pred, meas) in sorted(per_family.items(), key=lambda kv: (-kv[1][2], -kv[1][1], kv[0]))]
    unmapped = per_family.get("unmapped")
    if unmapped:
        notes.append(f"{unmapped[0]} op(s) launched kernels but map to no vocabulary op: predicted 0")
    total_pred = sum(f.predicted_ns for f in families)
    total_meas = (sum(f.measured_ns or 0.0 for f in families) + trace_ops.unattributed_ns) if measured_ok else None
    if measured_ok and trace_ops.unattributed_count:
        notes.append(f"{trace_ops.unattributed_count} device activit(ies) linked to no op "
                     f"({trace_ops.unattributed_ns / 1e6:.3f} ms) count in the measured total only")
    return ReplayReport(
        run_id=run.get("run_id") or run_dir.name, gpu=spec_key, traced_gpu=traced_gpu,
        measured_available=measured_ok, families=families, total_predicted_ns=total_pred,
        total_measured_ns=total_meas, unattributed_measured_ns=trace_ops.unattributed_ns if measured_ok else None,
        units=len(trace_ops.units), ops_in_trace=trace_ops.ops_total,
        roofline_fallbacks=dict(predictor.stats.fallbacks), notes=notes)
