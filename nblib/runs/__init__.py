"""Many runs: a folder per config hash, the cache several workers share, sweeps and the notebooks' grids.

* :mod:`~nblib.runs.folders` -- what a run folder holds (hash, provenance, metrics schema) and when it may be read.
* :mod:`~nblib.runs.machine` -- the CPU capability and torch build that computed a result.
* :mod:`~nblib.runs.cache` -- training into the cache: locks, quarantine, resume after a kill.
* :mod:`~nblib.runs.sweep` -- a list of configs, sequentially, one worker per GPU, or on Slurm (submitit).
* :mod:`~nblib.runs.grids` -- the runs of each training notebook, built from its parameters.
* :mod:`~nblib.runs.tables` -- tables read back from finished run folders.
"""
