"""The Python API validates its input like the CLI (bench/run/python_api.py): every bad input is one
``BenchError`` line before any work and before anything is written; it asks for what it must not assume
(``mean``/``std``); it names what the user named (``method_name``, ``model_name``); the same ``out=`` folder refuses
another model; and it leaves the user's model and images exactly as it found them, also when the run fails. The CLI's
two sweep mistakes (``key=a,b`` without ``-m``, ``hydra.launcher.n_jobs=0``) are one line too (bench/run/cli.py)."""

import tempfile

import numpy as np
import pytest
import torch
from torch import nn

import bench
from bench.errors import BenchError

SETTINGS = dict(steps=2, repeats=1, bootstrap=100, patch=4)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3)).eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def refused(match: str, *args, **kwargs) -> str:
    with pytest.raises(BenchError) as err:
        bench.evaluate_explanations(*args, **kwargs)
    text = str(err.value)
    assert match in text and "\n" not in text, text
    return text


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom on the first forward\nsecond line")


class Flat(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)


class Ints(nn.Module):
    def forward(self, x):
        return (x.flatten(1)[:, :3] > 0.5).long()


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
    """The API's temporary folders made under ``tmp_path/tmp`` (to see that a refused call made none)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_each_bad_input_is_one_line_before_any_work(tmp_path, temp_root):
    x, job = images(), tmp_path / "new" / "job"
    base = dict(mean=0, std=1, method="sensitivity", out=job, **SETTINGS)
    with torch.device("meta"):
        meta = net()
    half_meta = net()
    half_meta[3].weight = nn.Parameter(torch.empty(3, 16, device="meta"))  # one parameter on meta
    cases = [
        ("give mean= and std=", (net(), x), dict(method="sensitivity", out=job)),
        ("give mean= and std=", (net(), x), dict(method="sensitivity", mean=0.5, out=job)),
        ("give mean= and std=", (net(), x), {**base, "std": None}),
        ("std must be finite and > 0", (net(), x), {**base, "std": 0}),
        ("images holds no image (N = 0)", (net(), x[:0]), base),
        ("images must be a float array (N, C, H, W)", (net(), x[:, 0]), base),
        ("images must be a float array (N, C, H, W) of raw pixels, got (4, 1, 8, 8) torch.uint8",
         (net(), (x * 255).to(torch.uint8)), base),
        ("images are on the meta device", (net(), torch.empty(2, 1, 8, 8, device="meta")), base),
        ("labels[1]=7 is not a class of the model (its 3 outputs are classes 0…2)", (net(), x, [0, 7, 1, 2]), base),
        ("labels[0]=-1 is not a class", (net(), x, [-1, 0, 1, 2]), base),
        ("labels must be integer class indices", (net(), x, [0.5, 1, 1, 2]), base),
        ("target='label' explains each image's label: give labels=", (net(), x), {**base, "target": "label"}),
        ("model: the first forward pass on images of shape (1, 8, 8) failed (RuntimeError: boom on the first "
         "forward)", (Raises(), x), base),
        ("float class scores (logits) of shape (batch, classes), got (1,) torch.float32", (Flat(), x), base),
        ("got (1, 3) torch.int64", (Ints(), x), base),
        ("model: 1.weight is on the meta device", (meta, x), base),
        ("model: 3.weight is on the meta device", (half_meta, x), base),
        ("method_name= names given heatmaps", (net(), x), {**base, "method_name": "mine"}),
        ("model_name must be a non-empty string", (net(), x), {**base, "model_name": ""}),
        ("patch=40 is larger than the 8×8 images", (net(), x), {**base, "patch": 40}),
    ]
    for match, args, kwargs in cases:
        refused(match, *args, **kwargs)
        assert not (tmp_path / "new").exists(), match  # no job folder, not even its parent
        assert not any(temp_root.iterdir()), match     # no temporary folder


def test_a_bad_out_is_one_line(tmp_path, temp_root, monkeypatch):
    x, base = images(), dict(mean=0, std=1, method="sensitivity", **SETTINGS)
    (tmp_path / "a_file").write_text("x")
    refused("out=", net(), x, **base, out=tmp_path / "a_file")
    assert "is a file, not a folder" in refused("out=", net(), x, **base, out=tmp_path / "a_file")
    assert "a_file is a file, not a folder" in refused("cannot be made", net(), x, **base,
                                                       out=tmp_path / "a_file" / "below")
    locked = tmp_path / "read_only"
    locked.mkdir()
    locked.chmod(0o500)
    real = tempfile.mkstemp

    def no_write(*args, dir=None, **kwargs):  # as root chmod does not stop a write: refuse it as the OS would
        if dir is not None and str(dir).startswith(str(locked)):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", no_write)
    text = refused("cannot be written", net(), x, **base, out=locked / "job")
    assert "Permission denied" in text and "give a writable folder as out=" in text
    assert not (locked / "job").exists() and not any(temp_root.iterdir())
    locked.chmod(0o700)


def test_heatmap_errors_speak_of_the_argument_not_of_files(tmp_path):
    x, base = images(), dict(mean=0, std=1, **SETTINGS)
    text = refused("heatmaps must be (N, H, W) or (N, C, H, W) for the 4 images", net(), x,
                   heatmaps=np.zeros((4, 7, 8)), **base)
    assert "given_heatmaps" not in text and ".npz" not in text
    refused("got (3, 8, 8)", net(), x, heatmaps=np.zeros((3, 8, 8)), **base)
    refused("heatmaps[2] has non-finite values", net(), x, heatmaps=np.stack([np.zeros((8, 8))] * 2 +
                                                                            [np.full((8, 8), np.nan)] * 2), **base)
    refused("no heatmap for image 'b'", net(), x, image_ids=list("abcd"),
            heatmaps={"a": np.zeros((8, 8)), "c": np.zeros((8, 8)), "d": np.zeros((8, 8))}, **base)
    refused("'e' is not an image id", net(), x, image_ids=list("abcd"),
            heatmaps={k: np.zeros((8, 8)) for k in "abcde"}, **base)
    refused("heatmaps['b'] is float64 (7, 7)", net(), x, image_ids=list("abcd"),
            heatmaps={k: np.zeros((8, 8) if k != "b" else (7, 7)) for k in "abcd"}, **base)
    refused("heatmaps['c'] is float64 (2, 8, 8)", net(), x, image_ids=list("abcd"),
            heatmaps={k: np.zeros((8, 8) if k != "c" else (2, 8, 8)) for k in "abcd"}, **base)
    # a setting refused after the heatmaps were checked: the out= folder is not made
    heat = np.zeros((4, 8, 8), np.float32)
    refused("patch=40 is larger", net(), x, heatmaps=heat, out=tmp_path / "new" / "job", **{**base, "patch": 40})
    assert not (tmp_path / "new").exists()


def test_a_refused_call_leaves_an_earlier_runs_heatmaps_in_its_folder(tmp_path):
    x, out, base = images(), tmp_path / "job", dict(mean=0, std=1, **SETTINGS)
    heat = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2))
    first = bench.evaluate_explanations(net(), x, heatmaps=heat, out=out, **base)
    kept = (out / "given_heatmaps.npz").read_bytes()
    refused("different inputs (the precomputed heatmaps", net(), x, heatmaps=heat * 2, out=out, **base)
    assert (out / "given_heatmaps.npz").read_bytes() == kept
    again = bench.evaluate_explanations(net(), x, heatmaps=heat, out=out, **base)
    assert first["summary"].equals(again["summary"])


def test_rows_name_the_method_and_model_the_user_named():
    x, model = images(), net()
    heat = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2))
    tables = bench.evaluate_explanations(model, x, heatmaps=heat, method_name="my_gradcam", model_name="my_mlp",
                                         mean=0, std=1, **SETTINGS)
    curves = tables["curves"]
    assert set(curves.method) == {"my_gradcam"} and set(curves.model) == {"my_mlp"}
    assert set(tables["summary"].method) == {"my_gradcam"}
    from bench.run.identity import model_sha

    assert set(curves.model_sha) == {model_sha(model)}
    default = bench.evaluate_explanations(model, x, heatmaps=heat, mean=0, std=1, **SETTINGS)["curves"]
    assert set(default.method) == {"precomputed"} and set(default.model) == {"Sequential"}


def test_two_models_of_one_class_are_told_apart_and_one_out_folder_refuses_the_second(tmp_path):
    x, out = images(), tmp_path / "job"
    first = bench.evaluate_explanations(net(0), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    other = bench.evaluate_explanations(net(1), x, method="sensitivity", mean=0, std=1, **SETTINGS)
    assert set(first["curves"].model) == set(other["curves"].model) == {"Sequential"}  # one class name
    assert first["curves"].model_sha.nunique() == other["curves"].model_sha.nunique() == 1
    assert first["curves"].model_sha[0] != other["curves"].model_sha[0]  # told apart by the weights' digest
    again = bench.evaluate_explanations(net(0), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    assert first["summary"].equals(again["summary"])  # the same run: finished already
    text = refused("different model weights", net(1), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    assert str(out / "run") in text
    tanh = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    tanh.load_state_dict(net(0).state_dict())  # the same weights, another forward
    refused("different model architecture", tanh, x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    refused("computed on different images", net(0), images() * 0.5, method="sensitivity", mean=0, std=1, out=out,
            **SETTINGS)


def _state(model):
    """Everything of the model the run may touch: modes; each parameter and buffer object with its device, dtype,
    strides, storage and requires_grad; each module's hooks (their ids and functions)."""
    return ([m.training for m in model.modules()],
            [(n, id(t), t.device, t.dtype, t.stride(), t.data_ptr(), t.requires_grad)
             for n, t in (*model.named_parameters(), *model.named_buffers())],
            [[(name, list(getattr(m, name).items())) for name in ("_forward_hooks", "_forward_pre_hooks",
                                                                  "_backward_hooks", "_backward_pre_hooks")]
             for m in model.modules()])


def users_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3))
    model.train()  # in training mode, as a user may pass it
    model[2].eval()  # … with one module in another mode
    model[5].weight.requires_grad_(False)  # a frozen layer
    model[1].register_forward_hook(lambda m, i, o: None)
    model[5].register_full_backward_hook(lambda m, gi, go: None)
    return model


@pytest.mark.parametrize("method", ["lrp_eps", "sensitivity", "gradient_x_input"])
def test_the_users_model_and_images_come_back_as_they_were(method):
    model = users_model()
    calls = []
    model[3].register_forward_pre_hook(lambda m, i: calls.append(1))
    x = images()
    x_before = x.clone()
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    before = _state(model)
    bench.evaluate_explanations(model, x, method=method, mean=0.5, std=0.25, **SETTINGS)
    assert _state(model) == before
    assert model.training and not model[2].training and model[1].training
    assert all(torch.equal(v, weights_before[k]) for k, v in model.state_dict().items())  # BatchNorm stats too
    assert torch.equal(x, x_before)
    assert calls  # the user's hook still there (and it saw the forward passes)


def test_a_conv_model_comes_back_in_its_memory_format_after_a_channels_last_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 64, 3)).eval()
    before = _state(model)
    bench.evaluate_explanations(model, images(), method="sensitivity", mean=0, std=1, channels_last=True, **SETTINGS)
    assert _state(model) == before and model[0].weight.is_contiguous()


def test_the_model_comes_back_as_it_was_when_the_run_fails(monkeypatch):
    model = users_model()
    before = _state(model)
    refused("patch=40 is larger", model, images(), method="sensitivity", mean=0, std=1, steps=2, patch=40)
    assert _state(model) == before and model.training

    # a failure inside the run, after the run converted the model (new parameter data, new buffer objects — what
    # Module.to(device) does), turned its parameters' requires_grad off and added a hook
    from bench.run import evaluate

    real = evaluate.Evaluator.from_spec.__func__

    def converts_then_fails(cls, spec, model, explained=None):
        real(cls, spec, model, explained)
        model.to(torch.float64).requires_grad_(False)
        model[1].register_forward_hook(lambda m, i, o: None)
        raise RuntimeError("the run failed after converting the model")

    monkeypatch.setattr(evaluate.Evaluator, "from_spec", classmethod(converts_then_fails))
    with pytest.raises(RuntimeError, match="after converting the model"):
        bench.evaluate_explanations(model, images(), method="sensitivity", mean=0, std=1, **SETTINGS)
    assert _state(model) == before and model.training and model[1].weight.dtype == torch.float32


# -------------------------------------------------------------------------------- the CLI (in this process)

def test_a_list_without_dash_m_says_to_add_it(tmp_path, capsys):
    from conftest import bench_main

    code, _, err = bench_main(["method=sensitivity,random", f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "method=sensitivity,random gives several values, which is a sweep: add -m" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("n_jobs", ["0", "two", "1.5"])
def test_joblib_n_jobs_is_checked_before_the_sweep_starts(tmp_path, capsys, n_jobs):
    from conftest import bench_main
    from bench.run.cli import check_launcher_overrides

    code, _, err = bench_main(["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}",
                               "method=sensitivity,random", f"hydra.sweep.dir={tmp_path / 'sweep'}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"hydra.launcher.n_jobs={n_jobs}: joblib runs that many jobs" in lines[0] and "-1 for one job" in lines[0]
    assert not (tmp_path / "sweep").exists()
    for fine in ("1", "4", "-1", "-2", "null", "${oc.env:JOBS}"):
        check_launcher_overrides([f"hydra.launcher.n_jobs={fine}"])


def test_joblibs_own_refusal_of_a_value_set_elsewhere_is_one_line():
    """n_jobs from a config file (not the command line) is refused by joblib itself: that is one line too."""
    from joblib import Parallel, delayed

    from bench.run.cli import error_line

    with pytest.raises(ValueError) as err:
        Parallel(n_jobs=0)(delayed(abs)(-1) for _ in range(2))
    line = error_line(err.value)
    assert line is not None and "\n" not in line, line
    assert "hydra/launcher=joblib refused its settings (n_jobs == 0" in line and "-1 for one job per core" in line
