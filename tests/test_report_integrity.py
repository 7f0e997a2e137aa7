"""Statistics that say what they are and outputs that stay out of job folders: the report's intervals are the run's
(same resamples, same seed) or its caption says otherwise; fewer than 2 images or 100 resamples give no interval
(run, printed table, summary.csv, report); one name for two models or two image sets is flagged; collect and report
never write into a job folder."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import bench
from bench.errors import BenchError
from bench.report.build import make_report
from bench.report.load import load_results
from bench.report.table import caption, summary_table, to_markdown
from bench.run.collect import collect, format_report
from bench.run.job import run
from bench.run.summary import comparison_table, format_table

from conftest import FAST_MODEL, composed

HEADLINE = "aopc_morf_minus_random"
JOB = [*FAST_MODEL, "method=random", "steps=3", "repeats=1", "patch=7"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def test_the_reports_interval_is_the_runs_own(tmp_path):
    out = tmp_path / "job"
    summary = run(composed([*JOB, "n_images=12", "bootstrap=150", "seed=3"]), out)
    own = summary.set_index("quantity").loc[HEADLINE]
    table = summary_table(load_results([out]))
    r = table.iloc[0]
    assert (r.n_boot, r.bootstrap_seed, bool(r.run_interval)) == (150, 3, True)
    assert (r.ci_low, r.ci_high) == (own.ci_low, own.ci_high)  # the same resamples: equal, not close
    assert "each run's own resamples and seed, as in its summary.csv" in caption(table)
    other = summary_table(load_results([out]), n_boot=1000, seed=0)  # asked for other resamples: said so
    assert not other.run_interval.any() and (other.ci_low.iloc[0], other.ci_high.iloc[0]) != (own.ci_low, own.ci_high)
    assert "not the runs' own resamples or seed" in caption(other)


@pytest.mark.parametrize("setting,note", [("n_images=1", "no CI: 1 image"),
                                          ("bootstrap=50", "no CI: bootstrap=50 < 100 resamples")])
def test_too_few_images_or_resamples_give_no_interval_and_say_so(tmp_path, caplog, setting, note):
    out = tmp_path / "job"
    summary = run(composed([*JOB, "n_images=4", setting]), out)
    assert summary.ci_low.isna().all() and summary.ci_high.isna().all()  # summary.csv: no degenerate interval
    assert pd.read_csv(out / "summary.csv").ci_low.isna().all()
    assert note in caplog.text  # the run's warning
    assert f"[{note}" in format_table(summary)  # the printed table
    assert "[no CI]" in comparison_table(summary)
    results = load_results([out])
    table = summary_table(results)
    assert np.isnan(table.ci_low.iloc[0]) and "[no CI]" in to_markdown(table)
    assert any(note in w for w in results.warnings)
    assert "no interval ([no CI]) over fewer than 2 images or 100 resamples" in caption(table)
    written = make_report([out], tmp_path / "report", formats=("png",), show_progress=False)
    assert note in (tmp_path / "report" / "warnings.txt").read_text() and "warnings" in written


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()


def test_one_name_for_two_models_or_two_image_sets_is_flagged(tmp_path):
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    settings = dict(mean=0, std=1, method="sensitivity", steps=2, repeats=1, bootstrap=100, patch=4,
                    model_name="net")
    bench.evaluate_explanations(_net(0), x, out=tmp_path / "runs" / "a", **settings)
    bench.evaluate_explanations(_net(1), x, out=tmp_path / "runs" / "b", **settings)  # other weights, same name
    bench.evaluate_explanations(_net(0), x * 0.5, out=tmp_path / "runs" / "c", **settings)  # other images
    c = collect(tmp_path / "runs")
    text = (tmp_path / "runs" / "collected" / "warnings.txt").read_text()
    assert "model 'net' names 2 different weights" in text and "dataset 'in_memory' names 2 different images" in text
    assert "warning: model 'net' names 2 different weights" in format_report(c)
    assert "warning: model 'net' names 2 different weights" in comparison_table(c.summary)
    results = load_results([tmp_path / "runs"])
    assert any("model 'net' names 2 different weights" in w for w in results.warnings)
    assert summary_table(results).column.nunique() == 3  # never ranked together


def test_collect_and_report_never_write_into_a_job_folder(tmp_path):
    out = tmp_path / "job"
    run(composed([*JOB, "n_images=4", "bootstrap=100"]), out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(BenchError, match="lies in the job folder") as err:
        collect(tmp_path, out=out)
    assert "\n" not in str(err.value)
    with pytest.raises(BenchError, match="the default output folder .* lies in the job folder"):
        collect(out)  # DIR/collected of a job folder
    for target in (out, out / "report", out / "parts" / "x"):
        with pytest.raises(BenchError, match="lies in the job folder"):
            make_report([out], target, formats=("png",), show_progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert collect(out, write=False).runs  # reading is fine
    make_report([out], tmp_path / "report", formats=("png",), show_progress=False)  # outside: fine
    collect(tmp_path, out=tmp_path / "collected")
    collect(tmp_path, out=tmp_path / "collected")  # its own earlier output is not a job folder
