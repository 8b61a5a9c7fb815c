"""What executes the notebooks and reports them.

* :mod:`~nblib.pipeline.reproduce` -- ``python -m nblib.pipeline.reproduce --profile P``: profiles checked, every
  notebook run with papermill into ``outputs/<profile>/``.
* :mod:`~nblib.pipeline.plan` -- ``--plan``: the runs each notebook asks for, how many are cached, the hours.
* :mod:`~nblib.pipeline.readme` -- the README's Results section from ``outputs/``.
* :mod:`~nblib.pipeline.nbclean` -- strips executed outputs from the committed notebooks.
"""
