"""Synthetic feature stores for the demo, tests and benchmarks (``store.generate``): data
shaped by a known model, so every figure has its oracle."""
