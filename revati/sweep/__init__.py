"""``revati sweep``: grids of engine x workload x GPU configurations, run locally or on Ray."""
