"""The predictor the shim asks at emulation time: (op family, shape, dtype, GPU) -> duration.

``predictor`` (the ladder: measured shapes, fitted models, roofline), ``measured`` (its first
rungs), ``predict_table`` (``revati models predict``), ``ladder_report`` (how well each rung holds).
"""
