"""The run: config → checked spec → job folder → batches → tidy tables → collect.

config (Hydra's composition), spec (every key checked once), cli (the ``bench`` command), python_api
(``bench.evaluate_explanations``), job (one job: lock, model, claim, blocks, DONE), jobdir/lock/identity (the folder,
its owner and the run's identity), evaluate (one batch: the Evaluator and the loop over the run's protocols),
pipeline/progress/runtime, summary and tables (the per-image quantities and the schema), collect and
network_quality (after runs), slurm (the cluster launcher), groundtruth (a check of heatmaps against known regions).
"""
