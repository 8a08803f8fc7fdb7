"""revati.replay: the kernel database, model fitting, the predictor and trace replay."""
