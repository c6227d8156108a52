"""The `orch` command line and the read-only reports behind it."""
