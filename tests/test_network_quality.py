"""experiment=network_quality (TNNLS Fig. 7): checkpoints trained by the first job, AOPC per checkpoint,
collected into network_quality.csv with each checkpoint's test accuracy."""

import subprocess
import sys

import pandas as pd

from bench.run.network_quality import network_quality_table

from conftest import scaled


def test_network_quality_table_joins_accuracy(tmp_path):
    (tmp_path / "checkpoints.csv").write_text("iteration,epoch,train_loss,test_accuracy,file\n"
                                             "0,0,nan,0.1,ckpt-0.pt\n10,1,0.5,0.8,ckpt-10.pt\n")
    summary = pd.DataFrame({
        "method": "lrp_eps", "quantity": ["aopc_morf", "aopc_random", "aopc_morf", "aopc_morf"],
        "model_params": [f'{{"dir": "{tmp_path}", "iteration": 10}}', f'{{"dir": "{tmp_path}", "iteration": 10}}',
                         f'{{"dir": "{tmp_path}", "iteration": 0}}', '{"epochs": 6}'],
        "mean": [2.0, 1.0, 0.5, 9.0], "ci_low": [1.5, 0.5, 0.2, 8.0], "ci_high": [2.5, 1.5, 0.8, 10.0],
        "sem": 0.1, "n_images": 5})
    table = network_quality_table(summary)
    assert table[["iteration", "test_accuracy", "mean"]].values.tolist() == [[0, 0.1, 0.5], [10, 0.8, 2.0]]
    assert set(table.quantity) == {"aopc_morf"} and set(table.label) == {"AOPC"}
    assert network_quality_table(summary[summary.model_params == '{"epochs": 6}']) is None


def test_network_quality_experiment_end_to_end(cache_dir, tmp_path):
    args = [sys.executable, "-m", "bench", "-m", "experiment=network_quality", "n_images=3", "steps=3", "repeats=1",
            "model.params.train.epochs=1", "model.params.train.checkpoints=[0,63]", "model.params.iteration=0,63",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", f"model.params.dir={tmp_path / 'ckpts'}"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(600))
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "sweep" / "collected" / "network_quality.csv")
    assert table.iteration.tolist() == [0, 63] and (table.method == "lrp_eps").all()
    accuracy = pd.read_csv(tmp_path / "ckpts" / "checkpoints.csv").set_index("iteration").test_accuracy
    assert table.test_accuracy.tolist() == [accuracy[0], accuracy[63]]
    assert table.test_accuracy.iloc[1] > table.test_accuracy.iloc[0]  # one epoch of training helps
