"""Timing: Table 1's norm timings and the cost benchmarks (:mod:`~nblib.perf.benchmark`), training throughput and
the projected GPU-hours (:mod:`~nblib.perf.throughput`), the timer they share (:mod:`~nblib.perf.timing`)."""
