"""revati.tracer: record what every CUDA kernel really took on a GPU box, into revati's schema."""
