"""Trace replay: re-time a traced run's ops with the predictor and compare with the GPU
(``revati replay``)."""
