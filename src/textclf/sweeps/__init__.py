"""Sweeps on Kubeflow Pipelines: the grid of -S overrides (grid.py), the components and the
pipeline (stages.py, point.py, pipeline.py) and bringing results back as DVC experiments
(results.py). The `kfp` command (kfp_sweep.py) compiles them or runs them locally;
a local run stops cleanly (stop.py; step_guard.py leads each step's process group) and
its tasks work in a scratch folder (scratch.py).
Searches: a study's space (search_space.py), its trials as DVC experiments (study.py) and
its report (study_report.py), for the `tune` command (tune.py); a study's workers on
Kubeflow Pipelines (study_worker.py, study_pipeline.py), for `kfp --tune`.

Imports the training wing (a trial's report to its study), the reporting and data wings,
and the shared modules.
"""
