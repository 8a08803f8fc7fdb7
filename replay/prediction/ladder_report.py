"""How well the prediction ladder holds, per GPU, family and stack, with honest hold-outs.

For every stack that measured a family on a GPU (Note [Kernel stacks]), four errors over its
measured shapes (MAPE, bias), each against the measurement:

- ``within``: the stack's own measurements with *whole sweep points* held out -- every third
  interior value along each sweep line (m of a GEMM, the KV length of decode, the prompt
  length of prefill), or, where the rows name their model (Vidur), every shape of one model at
  a time (leave-one-model-out): the ladder answers the held-out shapes from what is left;
- ``cross``: the stack's shapes answered by the other stacks' measurements (the ladder with this
  stack removed): how far another software stack is, the error of emulating a stack nobody
  measured; shapes no other stack covers fall to the fitted model, whose stack is named --
  unless the model was fitted on this stack, when only the covered shapes are scored;
- ``models``: the shipped fitted models alone (no measured rung);
- ``roofline``: the tuned roofline (70% of peak FLOP/s, 80% of HBM bandwidth, +5 us).

At most ``max_rows`` shapes per stack are scored (a fixed, evenly spaced subset), so the report
takes seconds. ``revati models report --ladder`` and ``benchmarks/models_accuracy.py`` print it.
"""

from __future__ import annotations

import statistics
from typing import Iterable

from revati import gpus
from revati.replay.prediction import measured as measured_mod
from revati.replay import roofline, stacks
from revati.replay.prediction.measured import FAMILIES, SWEEP, MeasuredTable

TUNED_ROOFLINE = roofline.RooflineParams(kernel_floor_ns=5_000.0)
HOLD_EVERY = 3
MAX_ROWS = 3000


def _summary(pairs: list[tuple[float, float]]) -> dict | None:
    if not pairs:
        return None
    apes = [abs(p / m - 1) * 100 for p, m in pairs]
    return {"n": len(pairs), "mape_pct": statistics.fmean(apes),
            "bias_pct": statistics.fmean((p / m - 1) * 100 for p, m in pairs)}


def _held_sweep_points(family: str, shapes: Iterable[tuple]) -> set[tuple]:
    names = FAMILIES[family]
    pos = [names.index(a) for a in SWEEP[family]]
    rest = [i for i in range(len(names)) if i not in pos]
    lines: dict[tuple, list[tuple]] = {}
    for s in shapes:
        if len({s[i] for i in pos}) == 1:
            lines.setdefault(tuple(s[i] for i in rest), []).append(s)
    held = set()
    for members in lines.values():
        members.sort(key=lambda s: s[pos[0]])
        held.update(members[1:-1][::HOLD_EVERY])
    return held


def _subset(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def evaluate(gpu: str, families: Iterable[str] = tuple(FAMILIES), dtype: str = "bf16",
             max_rows: int = MAX_ROWS, table: MeasuredTable | None = None) -> list[dict]:
    from revati.replay.prediction.predictor import load_predictor

    key = gpus.resolve_key(gpu)
    table = table or MeasuredTable(key)
    models_only = load_predictor(key, measured=False)
    out = []
    for fam in families:
        by_stack = table.by_stack(fam, measured_mod.dtype_class(dtype))
        params_of = FAMILIES[fam]
        for stack in stacks.order(list(by_stack)):
            rows = by_stack[stack]
            shapes = sorted(rows.exact_ns)
            scored = _subset(shapes, max_rows)

            def params(s):
                return dict(zip(params_of, s))

            # within the stack: held-out sweep points, or leave one model out where rows name one
            by_model = getattr(rows, "models", {})
            if len({m for ms in by_model.values() for m in ms}) >= 3:
                pairs, how = _leave_one_model_out(key, fam, stack, rows, by_model, models_only)
                within_kind = "leave-one-model-out"
            else:
                held = _held_sweep_points(fam, shapes)
                kept = MeasuredTable.from_rows(key, [(fam, dtype, stack, params(s), rows.exact_ns[s])
                                                     for s in shapes if s not in held])
                pairs, how = _score(key, fam, dtype, _subset(sorted(held), max_rows), rows, kept, [stack],
                                    models_only)
                within_kind = "held-out sweep points"
            model_stack = models_only.models[fam].stack_for(dtype) if fam in models_only.models else ""
            others = [s for s in stacks.order(list(by_stack)) if s != stack]
            # a model fitted on this very stack is no cross-stack answer: score only what other
            # stacks' measurements answered then
            cross_pairs, cross_how = _score(key, fam, dtype, scored, rows, table, others, models_only,
                                            only_measured=model_stack == stack)
            model_pairs = [(models_only.predict_ns(fam, params(s), dtype), rows.exact_ns[s]) for s in scored]
            roof_pairs = [(roofline.roofline_ns(models_only.spec, fam, params(s), dtype, TUNED_ROOFLINE),
                           rows.exact_ns[s]) for s in scored]
            out.append({"gpu": key, "family": fam, "stack": stack, "shapes": len(shapes),
                        "within": _summary(pairs), "within_kind": within_kind, "within_answered_by": how,
                        "cross": _summary(cross_pairs), "cross_answered_by": cross_how,
                        "models": _summary(model_pairs), "models_fitted_on": model_stack,
                        "roofline": _summary(roof_pairs)})
    return out


def _score(key, fam, dtype, shapes, rows, table, order, models_only, only_measured: bool = False):
    from revati.replay.prediction.predictor import Predictor

    p = Predictor(key, models_only.models, measured=table, engine="torch")
    p.set_stack_order(fam, dtype, order)
    pairs, how = [], {}
    for s in shapes:
        ns, rung = p.predict_detail(fam, dict(zip(FAMILIES[fam], s)), dtype)
        how[rung] = how.get(rung, 0) + 1
        if not only_measured or rung in ("measured", "interpolated"):
            pairs.append((ns, rows.exact_ns[s]))
    return pairs, how


def _leave_one_model_out(key, fam, stack, rows, by_model, models_only):
    pairs, how = [], {}
    names = sorted({m for ms in by_model.values() for m in ms})
    for held_model in names:
        held = [s for s, ms in by_model.items() if ms == {held_model}]   # shapes only this model has
        kept = MeasuredTable.from_rows(key, [(fam, "bf16", stack, dict(zip(FAMILIES[fam], s)), ns)
                                             for s, ns in rows.exact_ns.items() if by_model.get(s) != {held_model}])
        p_pairs, p_how = _score(key, fam, "bf16", _subset(held, MAX_ROWS // len(names)), rows, kept, [stack],
                                models_only)
        pairs += p_pairs
        for k, v in p_how.items():
            how[k] = how.get(k, 0) + v
    return pairs, how


def format_rows(rows: list[dict]) -> list[str]:
    def cell(s):
        return "-" if not s else f"{s['mape_pct']:.1f} / {s['bias_pct']:+.1f} ({s['n']})"

    lines = [f"{'gpu':<15}{'family':<14}{'stack':<16}{'within stack':>22}{'cross-stack':>22}"
             f"{'shipped models':>22}{'tuned roofline':>22}   (MAPE % / bias %, shapes)"]
    for r in rows:
        fitted_here = "*" if r["models_fitted_on"] == r["stack"] else " "
        lines.append(f"{r['gpu']:<15}{r['family']:<14}{r['stack']:<16}{cell(r['within']):>22}{cell(r['cross']):>22}"
                     f"{cell(r['models']) + fitted_here:>22}{cell(r['roofline']):>22}")
    lines.append("within stack: held-out sweep points (every third interior m / KV length / prompt length), or "
                 "leave-one-model-out where rows name their model; cross-stack: the other stacks' measurements, "
                 "else the fitted model (only the shapes other stacks cover where the model was fitted on this "
                 "stack); * the shipped model was fitted on this stack (in-sample, not a hold-out)")
    return lines
