"""DEFINITIONS §8: every row names every setting that made it — two runs that differ in any setting never merge into
one condition — and every quantity its unit."""

import json

import pandas as pd

from conftest import FAST_MODEL, composed
from bench.run.tables import COLUMN_KEY, CONDITION, PROVENANCE, SUMMARY_COLUMNS

JOB = [*FAST_MODEL, "method=sensitivity", "metrics=[aopc,deletion]", "n_images=3", "steps=3", "repeats=1",
       "bootstrap=20", "deletion.steps=4"]


def _run(tmp_path, name, *overrides):
    from bench.run.job import run

    summary = run(composed([*JOB, *overrides]), tmp_path / name)
    return summary, *(pd.read_parquet(tmp_path / name / f"{t}.parquet") for t in ("deletion", "curves"))


def test_a_protocol_setting_separates_two_runs_and_names_itself_in_its_rows(tmp_path):
    from bench.report.load import load_results
    from bench.run.identity import JOB_FORMAT  # noqa: F401  (the job layout the rows come from)

    zero, del_zero, _ = _run(tmp_path, "zero", "deletion.substrate=zero")
    blur, del_blur, curves = _run(tmp_path, "blur", "deletion.substrate=blur", "deletion.score=logit")
    assert list(zero.columns) == SUMMARY_COLUMNS and list(curves.columns[:len(PROVENANCE)]) == PROVENANCE
    # the deletion rows say which substrate and score made them (not the run's perturbation / score)
    params = json.loads(del_blur.protocol_params.iloc[0])
    assert (del_blur.protocol == "deletion").all() and params["substrate"] == "blur" and params["score"] == "logit"
    assert json.loads(del_zero.protocol_params.iloc[0])["substrate"] == "zero"
    assert (curves.protocol == "aopc").all()
    settings = json.loads(blur.protocol_settings.iloc[0])
    assert set(settings) == {"aopc", "deletion"} and settings["deletion"]["blur_sigma"] == 5.0
    assert (blur.metrics == "aopc,deletion").all() and (blur.bootstrap == 20).all() and (blur.images == 3).all()
    for col in ("code_sha", "model_sha", "data_sha", "device_name", "scipy_version", "skimage_version", "pandas_version"):
        assert blur[col].notna().all() and (blur[col].astype(str) != "").all(), col
    # units: deletion's own score, the run's for AOPC
    unit = zero.set_index("quantity").unit
    assert unit["deletion_auc_morf"] == "probability × fraction of pixels" and unit["aopc_morf"] == "logit"
    assert blur.set_index("quantity").unit["deletion_auc_morf"] == "logit × fraction of pixels"
    # two conditions, in the rows and in a report over both folders
    assert zero[CONDITION].iloc[0].astype(str).tolist() != blur[CONDITION].iloc[0].astype(str).tolist()
    results = load_results([tmp_path])
    assert len(results.runs) == 2 and results.runs[COLUMN_KEY].astype(str).drop_duplicates().shape[0] == 2


def test_images_repeats_and_seed_are_separate_columns():
    for setting in ("images", "data_sha", "repeats", "seed", "bootstrap", "model_sha", "protocol_settings", "metrics"):
        assert setting in COLUMN_KEY


def test_run_key_joins_summary_rows_tables_and_jobs_csv(tmp_path):
    from bench.run.collect import collect, jobs_frame

    summary, deletion, curves = _run(tmp_path / "sweep", "a")
    manifest = json.loads((tmp_path / "sweep" / "a" / "job.json").read_text())
    keys = {summary.run_key.iloc[0], deletion.run_key.iloc[0], curves.run_key.iloc[0]}
    assert keys == {manifest["run_key"]}
    c = collect(tmp_path / "sweep", write=False)
    jobs = jobs_frame(c)
    assert jobs.run_key.tolist() == [manifest["run_key"]] and jobs.images.tolist() == [3]
    assert set(c.summary.run_key) == keys
