"""Helpers for tests and benchmarks, as `tfds.testing` is for TFDS:
generated QuickDraw-like data (`synthetic`), a local HTTP server with range
requests (`range_server`) and timing (`timing`). Never imported by the
library itself."""
