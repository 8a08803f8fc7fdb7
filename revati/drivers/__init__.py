"""Programs revati runs inside an emulation (the default main job, ...)."""
