"""bench/run/pipeline.py and its use in bench/run/job.py: order kept, errors raised in the main thread, and work
already finished is written before an error ends the run."""

import threading
import time

import pandas as pd
import pytest

from bench.run import job as run_mod
from bench.run.evaluate import Evaluator
from bench.run.config import compose
from bench.run.jobdir import FAILED, finished_block
from bench.run.pipeline import HostQueue, prefetched

from conftest import FAST_MODEL


def test_prefetched_keeps_order_and_reads_ahead_on_another_thread():
    seen = []

    def items():
        for i in range(20):
            seen.append(threading.current_thread().name)
            yield i

    assert list(prefetched(items(), depth=3)) == list(range(20))
    assert set(seen) == {"bench-prefetch"}


def test_prefetched_raises_the_producers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_stops_early():
    before = threading.active_count()
    gen = prefetched(iter(range(10_000)), depth=2)
    assert next(gen) == 0
    gen.close()
    time.sleep(0.05)
    assert threading.active_count() == before


def test_host_queue_runs_in_order_at_most_depth_behind():
    done, inflight, peak = [], [0], [0]
    lock = threading.Lock()

    def work(i):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.002)
        done.append(i)
        with lock:
            inflight[0] -= 1

    with HostQueue(depth=2) as host:
        for i in range(30):
            host.submit(work, i)
            assert len(host._inflight) <= 2
    assert done == list(range(30)) and peak[0] == 1


def test_host_queue_error_reaches_the_main_thread():
    def fail():
        raise ValueError("bad rows")

    with pytest.raises(ValueError, match="bad rows"):
        with HostQueue(depth=1) as host:
            host.submit(fail)
            host.submit(lambda: None)  # waits for the first: raises here


def test_main_thread_error_finishes_submitted_work_first():
    done = []
    with pytest.raises(KeyError):
        with HostQueue(depth=4) as host:
            host.submit(lambda: (time.sleep(0.05), done.append("written")))
            raise KeyError("launch failed")
    assert done == ["written"]


# -------------------------------------------------------------------------------------------- in a run
JOB = [*FAST_MODEL, "n_images=6", "block_size=2", "batch_size=2", "steps=3", "repeats=2", "bootstrap=50",
       "method=sensitivity"]


def _run(tmp_path, cache_dir, *extra):
    cfg = compose([*JOB, f"cache_dir={cache_dir}", *extra])
    return run_mod.run(cfg, tmp_path / "job")


def test_a_failing_batch_keeps_the_blocks_before_it_and_resume_gives_the_uninterrupted_tables(
        tmp_path, cache_dir, monkeypatch):
    reference = _run(tmp_path / "ref", cache_dir)
    launch, calls = Evaluator.launch, [0]

    def failing(self, *args, **kw):
        calls[0] += 1
        if calls[0] == 2:  # the batch of the second block (one batch a block)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return launch(self, *args, **kw)

    monkeypatch.setattr(Evaluator, "launch", failing)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _run(tmp_path, cache_dir)
    job = tmp_path / "job"
    assert not any(t.name in ("bench-prefetch", "bench-host_0") for t in threading.enumerate())  # threads ended
    assert "illegal memory access" in (job / FAILED).read_text()
    assert finished_block(job, 0, 0, 2) is not None and finished_block(job, 1, 2, 4) is None

    monkeypatch.setattr(Evaluator, "launch", launch)
    resumed = _run(tmp_path, cache_dir)
    for name in ("curves.parquet", "summary.csv"):
        read = pd.read_parquet if name.endswith("parquet") else pd.read_csv
        a, b = (read(d / name).drop(columns="wall_time_s") for d in (tmp_path / "ref" / "job", job))
        pd.testing.assert_frame_equal(a, b)
    assert len(resumed) == len(reference)


def test_a_failing_block_write_ends_the_run_with_that_error(tmp_path, cache_dir, monkeypatch):
    from bench.run.jobdir import JobDir

    write = JobDir.write_block

    def full_disk(self, blk, *args, **kw):
        if blk[0] == 1:
            raise OSError(28, "No space left on device")
        return write(self, blk, *args, **kw)

    monkeypatch.setattr(JobDir, "write_block", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _run(tmp_path, cache_dir)
    job = tmp_path / "job"
    assert finished_block(job, 0, 0, 2) is not None and finished_block(job, 1, 2, 4) is None
    assert "No space left" in (job / FAILED).read_text()


def test_items_queued_after_a_failed_one_are_not_run():
    done = []

    def fail():
        time.sleep(0.02)
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with HostQueue(depth=3) as host:
            host.submit(fail)
            host.submit(done.append, "built on the failed item's state")
            host.submit(done.append, "this one too")
    assert done == []


def test_batches_read_in_slices_by_several_workers_give_the_same_tables(tmp_path, cache_dir):
    """num_workers=2 reads each batch of 5 as slices of 3 and 2 (one per worker) and joins them again."""
    one = _run(tmp_path / "w0", cache_dir, "n_images=7", "batch_size=5", "block_size=7", "num_workers=0")
    two = _run(tmp_path / "w2", cache_dir, "n_images=7", "batch_size=5", "block_size=7", "num_workers=2")
    a, b = (pd.read_parquet(tmp_path / d / "job" / "curves.parquet").drop(columns="wall_time_s") for d in ("w0", "w2"))
    pd.testing.assert_frame_equal(a, b)
    assert len(one) == len(two) and a.image_id.nunique() == 7


def test_joined_slices_keep_order_and_unreadable_images():
    import torch

    from bench.interfaces import UnreadableImage
    from bench.run.job import Batch, _joined

    def batch(positions, bad=()):
        good = [p for p in positions if p not in bad]
        raw = torch.stack([torch.full((1, 2, 2), float(p)) for p in good]) if good else None
        return Batch(good, [f"im{p}" for p in good], raw, torch.tensor(good) if good else None,
                     [UnreadableImage(f"im{p}", "broken") for p in bad])

    slices = [[[0, 1], [2, 3], [4]], [[5, 6]]]
    loader = [batch([0, 1]), batch([2, 3], bad=(2, 3)), batch([4]), batch([5, 6], bad=(6,))]
    first, second = list(_joined(loader, slices))
    assert first.indices == [0, 1, 4] and first.image_ids == ["im0", "im1", "im4"]
    assert first.raw[:, 0, 0, 0].tolist() == [0, 1, 4] and first.labels.tolist() == [0, 1, 4]
    assert [u.image_id for u in first.unreadable] == ["im2", "im3"]
    assert second is loader[3]
