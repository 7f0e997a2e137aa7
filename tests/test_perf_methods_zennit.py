"""bench.perf.methods times Zennit's composites next to ours (by default) and pairs the matching ones."""

import sys

import pytest

from bench.perf import methods as perf_methods

FAST = ["--model", "resnet18", "--size", "32", "--batch", "2", "--repeats", "1"]
PAIR_HEADER = "| ours | Zennit composite (same rules) |"


def test_zennit_rows_and_pairing_table_are_printed(capsys):
    pytest.importorskip("zennit")
    perf_methods.main(FAST + ["--methods", "lrp_composite,sensitivity"])
    out = capsys.readouterr().out
    for name in perf_methods.ZENNIT:
        assert f"| zennit:{name} |" in out
    assert PAIR_HEADER in out
    assert "| lrp_composite | zennit(lrp_composite) |" in out and "zennit(sensitivity)" not in out


def test_no_zennit_leaves_them_out(capsys):
    perf_methods.main(FAST + ["--methods", "sensitivity", "--no-zennit"])
    out = capsys.readouterr().out
    assert "| sensitivity |" in out and "zennit" not in out.lower()


def test_without_zennit_one_line_says_why(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "zennit", None)  # import zennit now raises ImportError
    perf_methods.main(FAST + ["--methods", "sensitivity"])
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "zennit" in line.lower()] == [
        line for line in out.splitlines() if line.startswith("zennit rows left out: zennit is not installed")]
    assert "zennit rows left out" in out and "| zennit:" not in out and PAIR_HEADER not in out
