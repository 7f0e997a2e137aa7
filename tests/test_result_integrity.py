"""Result integrity (bench/run/identity.py, bench/run/jobdir.py): a job folder's identity covers everything its
numbers depend on (configuration, code, model weights and architecture, the images read, library versions),
a folder of another run is refused naming what differs, the folder is the only place a job reads from, writes or
deletes, and a block or table file changed after it was written is never "already finished"."""

import json
import os

import pandas as pd
import pytest
import torch
from torch import nn

from bench.errors import BenchError
from bench.run import identity, jobdir
from bench.run.collect import collect
from bench.run.job import run

from conftest import FAST_MODEL, composed

JOB = [*FAST_MODEL, "method=random", "n_images=4", "block_size=2", "batch_size=2", "steps=3", "repeats=1",
       "bootstrap=100", "patch=7"]


@pytest.fixture(autouse=True)
def pinned_code(monkeypatch, cache_dir):
    """Other people edit the sources while tests run: pin the code identity that resume checks."""
    monkeypatch.setenv("BENCH_CODE_VERSION", "tests")


def _net(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), act, nn.Linear(16, 10)).eval()


def _tables(folder):
    done = json.loads((folder / "DONE").read_text())
    return {n: pd.read_parquet(folder / e["file"]).drop(columns="wall_time_s") for n, e in done["tables"].items()}


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------------------ identity

def test_same_weights_another_architecture_is_another_run(tmp_path):
    a, b = _net(nn.ReLU()), _net(nn.Tanh())
    assert identity.model_sha(a) == identity.model_sha(b)  # the weights alone cannot tell them apart
    assert identity.model_arch(a) != identity.model_arch(b)
    conf = composed(JOB)
    run(conf, tmp_path / "job", model=a)
    before = _snapshot(tmp_path / "job")
    with pytest.raises(BenchError, match="different model architecture") as err:
        run(conf, tmp_path / "job", model=b)
    assert "\n" not in str(err.value) and "resume=false" in str(err.value)
    assert _snapshot(tmp_path / "job") == before
    # other weights of the same architecture: named as such
    c = _net(nn.ReLU())
    with torch.no_grad():
        c[1].weight.add_(0.01)
    with pytest.raises(BenchError, match="different model weights"):
        run(conf, tmp_path / "job", model=c)


def test_the_images_read_are_part_of_the_identity(tmp_path):
    from PIL import Image

    root = tmp_path / "images"
    for k in range(2):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(2):
            Image.new("L", (28, 28), color=40 * (i + 2 * k)).save(root / f"c{k}" / f"{i}.png")
    conf = composed([*FAST_MODEL, "dataset=imagefolder", f"dataset.params.root={root}", "dataset.params.channels=1",
                     "dataset.params.mean=[0.5]", "dataset.params.std=[0.5]", "dataset.params.num_classes=10",
                     "dataset.params.resize=28", "dataset.params.crop=28",
                     "method=random", "n_images=4", "steps=3", "repeats=1", "bootstrap=100", "patch=7"])
    model = _net(nn.ReLU())
    run(conf, tmp_path / "job", model=model)
    # the same file list: finished; one image replaced by another of another size: refused, naming the images
    assert run(conf, tmp_path / "job", model=model) is not None
    Image.new("L", (28, 28), color=255).save(root / "c1" / "1.png", optimize=False, compress_level=0)
    with pytest.raises(BenchError, match="different images"):
        run(conf, tmp_path / "job", model=model)


def test_library_versions_and_every_difference_are_named():
    new = {"format": identity.JOB_FORMAT, "shard": 0, "num_shards": 1, "run_config": {"patch": 9},
           "code_sha": "c", "model_sha": "m", "model_arch": "a", "data_sha": "d",
           "libraries": {"torch": "2.5.0", "numpy": "2.0"}}
    assert identity.incompatibility(dict(new), new) is None
    assert "library versions (torch 2.4.0 there, 2.5.0 now)" in identity.incompatibility(
        {**new, "libraries": {"torch": "2.4.0", "numpy": "2.0"}}, new)
    assert "another layout" in identity.incompatibility({**new, "format": 2}, new)
    assert "different images" in identity.incompatibility({**new, "data_sha": "x"}, new)
    assert "architecture" in identity.incompatibility({**new, "model_arch": "x"}, new)
    # a caller that does not load the model (the Slurm launcher's skip check) leaves the architecture out
    assert identity.incompatibility({**new, "model_arch": "x"}, {k: v for k, v in new.items() if k != "model_arch"}) \
        is None


# ------------------------------------------------------------------------------------------ containment

def test_a_changed_table_is_damaged_never_finished_and_the_same_command_recomputes_it(tmp_path, caplog):
    conf = composed(JOB)
    out = tmp_path / "job"
    run(conf, out)
    reference = _tables(out)
    curves = out / "curves.parquet"
    curves.write_bytes(curves.read_bytes()[:200])  # truncated after DONE
    st = jobdir.status(out)
    assert st.status == "failed" and st.reason.startswith("damaged:") and "curves.parquet" in st.reason
    found = collect(out, write=False)  # listed with its reason, no parquet traceback
    assert found.jobs[0].status == "failed" and "damaged" in found.jobs[0].reason
    run(conf, out)  # the same command: recomputed, not "already finished"
    assert "recomputing it" in caplog.text
    again = _tables(out)
    for name in reference:
        pd.testing.assert_frame_equal(again[name], reference[name], check_exact=True, obj=name)
    assert jobdir.status(out).status == "finished"


def test_a_changed_block_file_is_recomputed(tmp_path):
    conf = composed([*JOB, "shard=0", "num_shards=2"])
    out = tmp_path / "shard"
    run(conf, out)
    part = jobdir.part_path(out, 0, "curves")
    assert jobdir.finished_block(out, 0, 0, 2) is not None
    df = pd.read_parquet(part)
    df.loc[0, df.select_dtypes("number").columns[-1]] += 1.0
    df.to_parquet(part, index=False)  # a well-formed file with another number in it
    assert jobdir.finished_block(out, 0, 0, 2) is None
    assert jobdir.status(out).status == "failed"
    run(conf, out)
    assert jobdir.finished_block(out, 0, 0, 2) is not None and jobdir.status(out).status == "finished"


def test_names_read_from_markers_never_leave_the_folder(tmp_path):
    conf = composed(JOB)
    out = tmp_path / "job"
    run(conf, out)
    victim, absolute = tmp_path / "victim.parquet", tmp_path / "absolute.parquet"
    victim.write_text("keep me")
    absolute.write_text("keep me too")
    done = json.loads((out / "DONE").read_text())
    done["tables"]["curves"]["file"] = "../victim.parquet"
    done["tables"]["extra"] = {"file": str(absolute), "rows": 1, "digest": "0"}
    (out / "DONE").write_text(json.dumps(done))
    st = jobdir.status(out)
    assert st.status == "failed" and "not a file of this folder" in st.reason
    run(composed([*JOB, "resume=false"]), out)  # discarding the old results deletes only the folder's own files
    assert victim.read_text() == "keep me" and absolute.read_text() == "keep me too"
    assert jobdir.status(out).status == "finished"
    # a block marker naming a table outside parts/: not a finished block
    marker = {"block": 0, "start": 0, "stop": 2, "tables": {"../../victim": 1}, "digests": {"../../victim": "0"}}
    assert not jobdir.inside(out, "../x") and not jobdir.inside(out, "/etc/passwd") and jobdir.inside(out, "a.csv")
    (out / "parts").mkdir()
    (out / "parts" / "block-000000.done.json").write_text(json.dumps(marker))
    assert jobdir.finished_block(out, 0, 0, 2) is None


def test_a_parts_folder_linked_to_another_job_is_refused(tmp_path):
    conf = composed([*JOB, "shard=0", "num_shards=2"])
    other, out = tmp_path / "other", tmp_path / "job"
    run(conf, other)
    out.mkdir()
    os.symlink(other / "parts", out / "parts")
    with pytest.raises(BenchError, match="symbolic link") as err:
        run(conf, out)
    assert "\n" not in str(err.value)
    assert jobdir.finished_block(out, 0, 0, 2) is None  # never read through the link
    assert jobdir.status(out).status == "failed"


def test_an_older_layout_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    pd.DataFrame({"a": [1]}).to_parquet(out / "curves.parquet")
    (out / "summary.csv").write_text("a\n1\n")
    before = _snapshot(out)
    with pytest.raises(BenchError, match="without a job manifest"):
        run(composed(JOB), out)
    assert _snapshot(out) == before
    # a manifest of the previous format: refused too
    out2 = tmp_path / "format2"
    run(composed(JOB), out2)
    manifest = json.loads((out2 / "job.json").read_text())
    (out2 / "job.json").write_text(json.dumps({**manifest, "format": 2}))
    before = _snapshot(out2)
    with pytest.raises(BenchError, match="another layout"):
        run(composed(JOB), out2)
    assert _snapshot(out2) == before


def test_a_fifo_marker_does_not_hang(tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    os.mkfifo(out / "DONE")
    os.mkfifo(out / "FAILED")
    st = jobdir.status(out)  # returns (would block forever if it opened the FIFOs)
    assert st.status == "failed"
    os.unlink(out / "FAILED")
    assert jobdir.status(out).status == "failed" and "not a regular file" in jobdir.status(out).reason
