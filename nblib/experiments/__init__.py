"""One module per notebook; its ``run(settings)`` returns a result with the tables, the figures' data and the
verdicts, and ``result.save(output_dir)`` writes them.

* :mod:`~nblib.experiments.theorem1` -- notebook 01: eq. 1-3 against the dense operator matrix.
* :mod:`~nblib.experiments.table1` -- notebook 02: the time of eq. 1-2 against power iteration, FFT, memory floor.
* :mod:`~nblib.experiments.table2` -- notebook 03: norm regularizers against plain training.
* :mod:`~nblib.experiments.figure2` -- notebook 04: layer norms of adversarially trained networks.
* :mod:`~nblib.experiments.propositions` -- notebook 05: Proposition 1, Theorem 2 and Proposition 2.
* :mod:`~nblib.experiments.toys` -- the constructions of Propositions 1-2 that ``propositions`` runs.
* :mod:`~nblib.experiments.robustbench` -- notebook 06: Figure 2's claim on RobustBench's published models.
"""
