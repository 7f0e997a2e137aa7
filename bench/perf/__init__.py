"""Speed benchmarks — scripts that print figures, never tests: ``python -m bench.perf`` (the engine),
``bench.perf.methods``, ``bench.perf.cli``, ``bench.perf.family`` (every protocol against Quantus), ``bench.perf.road``,
``bench.perf.inpaint``, ``bench.perf.imputation``, ``bench.perf.compare`` (two commits, alternating rounds) and
``bench.perf.suite`` (all of them, each in a fresh process)."""
