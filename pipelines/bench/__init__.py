"""Benchmark scripts: run from a source checkout as ``python -m pipelines.bench.<name>``.

Not installed with the package (see pyproject.toml). Each builds its command line, times a
variant beside its baseline in the same run, writes its JSON and prints its table through
``harness``; ``baseline`` and ``ranks`` are parts of ``training``, with no command line."""
