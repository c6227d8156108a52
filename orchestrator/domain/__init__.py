"""The vocabulary: configuration, models, records and errors; no I/O."""
