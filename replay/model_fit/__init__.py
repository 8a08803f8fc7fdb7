"""Fitting per-op duration models from the kernel database (``revati models fit`` / ``report``).

``fitting`` (the fit per GPU and op family), ``gridmodel`` (the model form), ``holdout`` (honest
splits), ``model_store`` (models on disk, read by the predictor), ``model_report``.
"""
