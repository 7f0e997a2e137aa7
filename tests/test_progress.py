"""bench.progress: a progress bar on stderr that is silent when stderr is not a terminal."""

import io

import pytest

from bench.progress import Progress, progress, should_draw


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_silent_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    assert list(progress(range(5), desc="quiet")) == [0, 1, 2, 3, 4]
    with Progress(total=3, desc="quiet") as bar:
        bar.update(3)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # pytest's captured stderr is not a terminal
    buf = io.StringIO()
    list(progress(range(3), file=buf))
    assert buf.getvalue() == ""


def test_draws_on_a_terminal_and_ends_the_line(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty = Tty()
    assert list(progress(iter(range(4)), total=4, desc="evaluating", unit="img", file=tty, min_interval=0)) \
        == [0, 1, 2, 3]
    text = tty.getvalue()
    assert text.startswith("\revaluating") and text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert "100%" in last and "4/4 img" in last and "|" + "█" * 20 + "|" in last
    assert "  0% " in text.split("\r")[1]  # drawn at the start, before any item


def test_unknown_total_and_throttling(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty = Tty()
    with Progress(desc="runs", file=tty, min_interval=3600) as bar:
        for _ in range(50):
            bar.update()
    draws = tty.getvalue().split("\r")[1:]
    assert len(draws) == 2  # the first draw and the final one on close; updates in between are throttled
    assert draws[-1].strip().startswith("runs  50 it")


def test_environment_and_argument_override(monkeypatch):
    tty, pipe = Tty(), io.StringIO()
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    assert not should_draw(tty)
    monkeypatch.setenv("BENCH_PROGRESS", "1")
    assert should_draw(pipe)
    monkeypatch.delenv("BENCH_PROGRESS")
    assert should_draw(tty) and not should_draw(pipe)
    assert should_draw(pipe, enabled=True) and not should_draw(tty, enabled=False)


def test_closes_when_the_loop_breaks_or_raises(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty = Tty()
    for i in progress(range(10), file=tty):
        if i == 2:
            break
    assert tty.getvalue().endswith("\n")  # generator closed on break → bar closed
    tty = Tty()
    with pytest.raises(RuntimeError):
        for _ in progress(range(10), file=tty):
            raise RuntimeError
    assert tty.getvalue().endswith("\n")
