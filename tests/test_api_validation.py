"""The Python API validates its input like the CLI (bench/run/python_api.py): every bad input is one
``BenchError`` line before any work; it asks for what it must not assume (``mean``/``std``); it names what the user
named (``method_name``, ``model_name``); the same ``out=`` folder refuses another model; and it leaves the user's
model and images exactly as it found them, also when the run fails."""

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


def test_each_bad_input_is_one_line_before_any_work(tmp_path):
    x, base = images(), dict(mean=0, std=1, method="sensitivity", **SETTINGS)
    refused("give mean= and std=", net(), x, method="sensitivity")
    refused("give mean= and std=", net(), x, method="sensitivity", mean=0.5)
    refused("std must be finite and > 0", net(), x, **{**base, "std": 0})
    refused("images holds no image (N = 0)", net(), x[:0], **base)
    refused("labels[1]=7 is not a class of the model", net(), x, [0, 7, 1, 2], **base)
    refused("labels[0]=-1 is not a class", net(), x, [-1, 0, 1, 2], **base)
    refused("labels must be integer class indices", net(), x, [0.5, 1, 1, 2], **base)
    refused("target='label' explains each image's label: give labels=", net(), x, **base, target="label")
    (tmp_path / "a_file").write_text("x")
    refused("is a file, not a folder", net(), x, **base, out=tmp_path / "a_file")
    refused("out=", net(), x, **base, out=tmp_path / "a_file" / "below")
    refused("RuntimeError: boom on the first forward", Raises(), x, **base)
    refused("float class scores of shape (batch, classes), got (1,)", Flat(), x, **base)
    refused("got (1, 3) torch.int64", Ints(), x, **base)
    with torch.device("meta"):
        meta = net()
    refused("is on the meta device", meta, x, **base)
    refused("images are on the meta device", net(), torch.empty(2, 1, 8, 8, device="meta"), **base)
    refused("method_name= names given heatmaps", net(), x, **base, method_name="mine")
    assert not any(tmp_path.glob("bench-*"))


def test_heatmap_errors_speak_of_the_argument_not_of_files():
    x, base = images(), dict(mean=0, std=1, **SETTINGS)
    text = refused("heatmaps must be (N, H, W) or (N, C, H, W) for the 4 images", net(), x,
                   heatmaps=np.zeros((4, 7, 8)), **base)
    assert "given_heatmaps" not in text and ".npz" not in text
    refused("heatmaps[2] has non-finite values", net(), x, heatmaps=np.stack([np.zeros((8, 8))] * 2 +
                                                                            [np.full((8, 8), np.nan)] * 2), **base)
    refused("no heatmap for image 'b'", net(), x, image_ids=list("abcd"),
            heatmaps={"a": np.zeros((8, 8)), "c": np.zeros((8, 8)), "d": np.zeros((8, 8))}, **base)
    refused("'e' is not an image id", net(), x, image_ids=list("abcd"),
            heatmaps={k: np.zeros((8, 8)) for k in "abcde"}, **base)
    refused("heatmaps['b'] is float64 (7, 7)", net(), x, image_ids=list("abcd"),
            heatmaps={k: np.zeros((8, 8) if k != "b" else (7, 7)) for k in "abcd"}, **base)


def test_rows_name_the_method_and_model_the_user_named(tmp_path):
    x, model = images(), net()
    heat = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2))
    tables = bench.evaluate_explanations(model, x, heatmaps=heat, method_name="my_gradcam", model_name="my_mlp",
                                         mean=0, std=1, **SETTINGS)
    curves = tables["curves"]
    assert set(curves.method) == {"my_gradcam"} and set(curves.model) == {"my_mlp"}
    assert set(tables["summary"].method) == {"my_gradcam"}
    from bench.run.identity import model_sha

    assert set(curves.model_sha) == {model_sha(model)}


def test_the_same_out_folder_refuses_another_model(tmp_path):
    x, out = images(), tmp_path / "job"
    first = bench.evaluate_explanations(net(0), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    again = bench.evaluate_explanations(net(0), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    assert first["summary"].equals(again["summary"])  # the same run: finished already
    refused("different model weights", net(1), x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    other.load_state_dict(net(0).state_dict())  # the same weights, another forward
    refused("different model architecture", other, x, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)
    refused("computed on different images", net(0), images() * 0.5, method="sensitivity", mean=0, std=1, out=out, **SETTINGS)


def _state(model):
    return ([m.training for m in model.modules()],
            [(n, t.device, t.dtype, t.requires_grad) for n, t in (*model.named_parameters(), *model.named_buffers())],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()])


@pytest.mark.parametrize("method", ["lrp_eps", "sensitivity", "gradient_x_input"])
def test_the_users_model_and_images_come_back_as_they_were(method):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3))
    torch.manual_seed(0)
    model.train()  # in training mode, as a user may pass it
    model[5].weight.requires_grad_(False)  # a frozen layer
    calls = []
    model[1].register_forward_hook(lambda m, i, o: calls.append(1))
    x = images()
    x_before = x.clone()
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    before = _state(model)
    bench.evaluate_explanations(model, x, method=method, mean=0.5, std=0.25, **SETTINGS)
    assert _state(model) == before
    assert model.training and model[2].training
    assert all(torch.equal(v, weights_before[k]) for k, v in model.state_dict().items())  # BatchNorm stats too
    assert torch.equal(x, x_before)
    assert calls  # the user's hook still there (and it saw the forward passes)


def test_the_model_comes_back_as_it_was_when_the_run_fails():
    model = net().train()
    before = _state(model)
    refused("patch=40 is larger", model, images(), method="sensitivity", mean=0, std=1, steps=2, patch=40)
    assert _state(model) == before and model.training
