"""bench.progress: tqdm bars on stderr, silent when stderr is not a terminal, closed exactly once."""

import io

import pytest

from bench.run.progress import Progress, progress, should_draw


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


def test_advances_per_batch_and_ends_once(monkeypatch):
    monkeypatch.delenv("BENCH_PROGRESS", raising=False)
    tty = Tty()
    with Progress(total=10, desc="evaluating", unit="img", file=tty, min_interval=0) as bar:
        for batch in (4, 4, 2):  # one update per batch of images
            bar.update(batch)
        bar.close()  # closing twice (explicitly, then by the with) draws nothing more
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("evaluating") and "100%" in last and "10/10" in last and "img" in last
    assert "4/10" in text and "8/10" in text and bar.n == 10


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
    gen = progress(range(10), file=tty)
    for i in gen:
        if i == 2:
            break
    gen.close()
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1
    tty = Tty()
    with pytest.raises(RuntimeError):
        for _ in progress(range(10), file=tty):
            raise RuntimeError
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1
