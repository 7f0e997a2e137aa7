"""bench.perf.suite runs the benchmark scripts, keeps each one's output and tabulates their key figures."""

from bench.perf import suite as perf_suite


def test_lists_every_profile_and_refuses_an_unknown_step(capsys):
    for profile in perf_suite.PROFILES:
        assert perf_suite.main(["--profile", profile, "--list"]) == 0
        out = capsys.readouterr().out
        assert all(name in out for name, _, _ in perf_suite.PROFILES[profile])
    assert perf_suite.main(["--profile", "cpu", "--only", "nope"]) == 2
    assert "unknown step(s) nope" in capsys.readouterr().err


def test_key_figures_are_found_in_each_scripts_output():
    text = ("engine efficiency           0.981  (median ...)\n"
            "speed-up over quantus                                     12.40×  (median ...)\n"
            "same curve as quantus: max |Δ| = 0, tolerance 0.0001 for fp32 with TF32 off  (OK)\n"
            "wall time              61.2 s  (fresh process ...)\n"
            "start-up                4.1 s  from launch to 'job ready'\n"
            "GPU idle share   3.5 % of 300 samples at 0 % over the run; ...\n"
            "paper scale (5040 images): ~85 s at this rate (start-up counted once)\n"
            "| lrp_composite | 0.010 | 0.005 | 2.06 |\n")
    assert perf_suite.figures(text) == [
        "engine efficiency 0.981", "× Quantus 12.40", "curve check OK", "CLI wall s 61.2", "5040 images, s 85",
        "GPU idle 3.5 %", "start-up s 4.1", "lrp_composite × gradient 2.06"]


def test_runs_a_step_and_keeps_its_output(tmp_path, monkeypatch, capsys):
    step = ("tiny", ["bench.perf", "--images", "2", "--steps", "2", "--repeats", "1", "--rounds", "1",
                     "--batch-size", "8"], 120)
    monkeypatch.setitem(perf_suite.PROFILES, "cpu", [step])
    assert perf_suite.main(["--profile", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| tiny | ok |" in out and "engine efficiency" in out
    assert "engine efficiency" in (tmp_path / "tiny.txt").read_text()
    assert (tmp_path / "summary.md").read_text().startswith("tiny\tok\t")


def test_perf_compare_alternates_a_commit_and_this_checkout(capsys):
    from bench.perf import compare as perf_compare

    assert perf_compare.main(["--base", "HEAD", "--rounds", "1", "--", "bench.perf", "--images", "2", "--steps",
                              "2", "--repeats", "1", "--rounds", "1", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert out.index("== round 1 · base HEAD") < out.index("== round 1 · this checkout")
    assert out.count("engine efficiency") == 2
    assert perf_compare.main(["--base", "no-such-revision", "--", "bench.perf"]) == 2
    assert "error: cannot check out 'no-such-revision'" in capsys.readouterr().err
