"""The benchmark client for OpenAI-compatible servers (``revati bench serve``)."""
