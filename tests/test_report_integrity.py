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
from bench.report import style
from bench.report.build import FIG4_FILES, FIG4_PANELS, make_report
from bench.report.figures import relative_figures
from bench.report.load import load_results
from bench.report.table import caption, summary_table, to_markdown
from bench.run.collect import collect, format_report
from bench.run.job import run
from bench.run.summary import comparison_table, format_table, mixed_columns, summarize_run, with_run
from bench.run.tables import PROVENANCE, write_csv, write_parquet

from conftest import FAST_MODEL, composed
from test_report import make_run

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
    assert "for every quantity (" in caplog.text  # one line, not one per quantity
    assert f"warning: {note}" in comparison_table(summary)  # the printed comparison says why, in one line
    c = collect(tmp_path, out=tmp_path / "collected")
    assert note in (tmp_path / "collected" / "warnings.txt").read_text() and f"warning: {note}" in format_report(c)


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


def legacy_run(path, method, bootstrap=1000, **settings):
    """A run folder of the format before resumable jobs (curves.parquet + summary.csv), ``settings`` in its rows."""
    make_run(path, method, complexity=False, heatmaps=None)
    curves = pd.read_parquet(path / "curves.parquet").assign(bootstrap=bootstrap, **settings)
    write_parquet(curves, path / "curves.parquet")
    prov = {c: curves[c].iloc[0] for c in PROVENANCE}
    write_csv(with_run(summarize_run({"curves": curves}, bootstrap, int(prov["seed"])), prov), path / "summary.csv")
    return path


def test_a_column_whose_methods_ran_on_other_inputs_or_models_is_flagged(tmp_path):
    runs = tmp_path / "runs"  # older runs: no digest of the images or weights to tell them apart
    unrecorded = dict(data_sha="", model_sha="")
    legacy_run(runs / "a", "sensitivity", preprocessing="resize=256 crop=224", **unrecorded)
    legacy_run(runs / "b", "lrp_eps", preprocessing="resize=224", **unrecorded)
    legacy_run(runs / "c", "random", preprocessing="resize=224", **unrecorded)
    flag = "mixes 2 different inputs (preprocessing)"
    c = collect(runs)
    assert flag in (runs / "collected" / "warnings.txt").read_text()
    assert "warning: one column" in format_report(c) and flag in format_report(c)
    assert flag in comparison_table(c.summary)
    results = load_results([runs])
    assert any(flag in w for w in results.warnings)
    out = make_report([runs], tmp_path / "report", formats=("png",), show_progress=False)
    assert flag in (tmp_path / "report" / "warnings.txt").read_text() and "warnings" in out
    # the model: its settings count where no digest vouches for the weights, not where one does (a path to them)
    rows = pd.DataFrame({"method": ["a", "b"], "dataset": "d", "model": "m", "model_params": ['{"weights": "x"}',
                                                                                              '{"weights": "y"}']})
    assert "different model settings" in " ".join(mixed_columns(rows.assign(model_sha="")))
    assert mixed_columns(rows.assign(model_sha="w")) == []
    assert mixed_columns(rows.assign(model_sha="w", model_params="{}")) == []


def test_the_same_condition_twice_is_shown_twice_not_a_crash(tmp_path):
    for name in ("a", "b"):
        legacy_run(tmp_path / "runs" / name, "sensitivity")
    text = comparison_table(collect(tmp_path / "runs").summary)
    assert "sensitivity #2" in text and "the same condition run or collected twice" in text


def test_captions_say_when_an_interval_is_not_a_runs_own(tmp_path):
    runs = tmp_path / "runs"
    for method in ("random", "sensitivity", "lrp_eps"):
        legacy_run(runs / method, method, bootstrap=200)
    legacy_run(runs / "more", "lrp_eps", bootstrap=1000)  # another condition: 1000 resamples
    results = load_results([runs])
    table = summary_table(results)
    own = pd.read_csv(runs / "sensitivity" / "summary.csv").set_index("quantity").loc[HEADLINE]
    r = table[table.method == "sensitivity"].iloc[0]
    assert r.n_boot == 200 and (r.ci_low, r.ci_high) == pytest.approx((own.ci_low, own.ci_high), rel=1e-14)  # (CSV)
    assert "the runs' bootstrap settings differ" in caption(table)  # pooled: said so
    some = summary_table(results, n_boot=200, seed=None)  # the own resamples of 3 runs, not of the 4th
    assert "not the own resamples or seed of 1 of the 4 runs" in caption(some)
    [(_, fig)] = relative_figures(results, FIG4_PANELS, FIG4_FILES)
    assert "each run's own bootstrap setting and seed" in style.caption_of(fig)
    [(_, fig)] = relative_figures(results, FIG4_PANELS, FIG4_FILES, seed=7)
    assert "seed 7: not the runs' own" in style.caption_of(fig)
    [(_, fig)] = relative_figures(results, FIG4_PANELS, FIG4_FILES, baseline="sensitivity")
    assert "computed here" in style.caption_of(fig) and "not an interval of either run's summary.csv" in \
        style.caption_of(fig)


def test_outputs_never_hide_or_overwrite_what_they_read(tmp_path):
    job = tmp_path / "runs" / "job"
    legacy_run(job, "sensitivity")
    for out in (tmp_path / "runs", tmp_path):  # a collection there would hide its jobs from the next collect
        with pytest.raises(BenchError, match="holds the folder it collects"):
            collect(tmp_path / "runs", out=out)
    (tmp_path / "link").symlink_to(job)
    with pytest.raises(BenchError, match="lies in the job folder"):
        collect(tmp_path / "runs", out=tmp_path / "link" / "x")  # through a link
    with pytest.raises(BenchError, match="lies in the job folder"):
        make_report([tmp_path / "nothing here"], tmp_path / "link", formats=("png",))  # before reading anything
    with pytest.raises(BenchError, match="the report's default folder .* lies in the job folder"):
        make_report([job], formats=("png",))
    collect(tmp_path / "runs")
    with pytest.raises(BenchError, match="is a folder bench.collect wrote"):
        make_report([tmp_path / "runs" / "collected"], tmp_path / "runs" / "collected", formats=("png",))
    assert not (tmp_path / "runs" / "collected" / "report").exists() and sorted(p.name for p in job.iterdir()) == \
        ["curves.parquet", "summary.csv"]
