"""``revati report``: latency-vs-rate curves, a Pareto front and an HTML report from a sweep."""
