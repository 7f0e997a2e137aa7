"""Safe loading of user files: a tampered CIFAR-10 folder or checkpoint runs none of its code, and broken or
unfitting files get honest one-line messages. Fast: everything is written here, nothing runs in a subprocess."""

import io
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import plugins
from bench.errors import BenchError
from bench.models import load_checkpoint, load_torchvision, load_user
from bench.models.weights import _load_state


class Payload:
    """Unpickling this writes ``marker``: what a tampered file would do instead (e.g. os.system)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it (the official CIFAR-10 batches): ``bytes`` are Python 2 ``str``
    (SHORT_BINSTRING / BINSTRING), not ``_codecs.encode(…, 'latin1')`` as Python 3 writes them."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def py2_pickle(obj) -> bytes:
    """``obj`` pickled as Python 2 + numpy 1.x pickled the official files (``numpy.core.multiarray``)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")


def cifar(root: Path) -> object:
    return plugins.load_class("datasets", "cifar10")(root=str(root))


def batch(n: int, seed: int, name: bytes = b"testing batch 1 of 1") -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return ({b"batch_label": name, b"labels": labels, b"data": data,
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}, data, labels)


META = {b"num_cases_per_batch": 10000, b"num_vis": 3072,
        b"label_names": [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship",
                         b"truck"]}


def write_folder(tmp: Path, dump=py2_pickle, n: int = 4) -> tuple[Path, dict]:
    folder = tmp / "root" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = {}
    for i, name in enumerate(["test_batch"] + [f"data_batch_{k}" for k in range(1, 6)]):
        content, data, labels = batch(n, i, f"batch {name}".encode())
        (folder / name).write_bytes(dump(content))
        arrays[name] = (data, labels)
    (folder / "batches.meta").write_bytes(dump(META))
    return folder.parent, arrays


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    return text


# --------------------------------------------------------------------------------------------- CIFAR-10

@pytest.mark.parametrize("dump", [py2_pickle, lambda o: pickle.dumps(o, protocol=2),
                                  lambda o: pickle.dumps(o, protocol=4), lambda o: pickle.dumps(o, protocol=5)],
                         ids=["python2-official", "protocol2", "protocol4", "protocol5"])
def test_a_genuine_shaped_cifar10_folder_loads_with_the_right_pixels_and_labels(tmp_path, dump):
    root, arrays = write_folder(tmp_path, dump)
    if dump is py2_pickle:  # the globals of the official files, and nothing else
        assert b"cnumpy.core.multiarray\n_reconstruct" in (root / "cifar-10-batches-py" / "test_batch").read_bytes()
    ds = cifar(root)
    data, labels = arrays["test_batch"]
    assert len(ds) == 4 and ds.num_classes == 10 and ds.image_shape == (3, 32, 32)
    for i in range(4):
        image_id, raw, label = ds.get(i)
        assert image_id == f"cifar10-test-{i:05d}" and label == labels[i]
        # row layout: 1024 red, 1024 green, 1024 blue values, each 32×32 row-major
        assert torch.equal(raw, torch.from_numpy(data[i].reshape(3, 32, 32)).float() / 255)
    x, y = ds.train_split()
    assert x.shape == (20, 3, 32, 32)
    assert y.tolist() == sum((arrays[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert torch.equal(x[4] * 255, torch.from_numpy(arrays["data_batch_2"][0][0].reshape(3, 32, 32)).float())


@pytest.mark.parametrize("tampered", ["test_batch", "batches.meta"])
def test_a_tampered_cifar10_file_is_refused_without_running_it(tmp_path, tampered):
    root, _ = write_folder(tmp_path)
    marker = tmp_path / "pwned"
    target = root / "cifar-10-batches-py" / tampered
    evil = {**META, b"label_names": Payload(marker)} if tampered == "batches.meta" else \
        {b"data": Payload(marker), b"labels": [0]}
    target.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(BenchError) as info:
        cifar(root)
    text = one_line(info.value)
    assert str(target) in text and "is not a genuine CIFAR-10 batch" in text
    assert re.search(r"it refers to (builtins|__builtin__)\.exec, ", text)
    assert "refused without running it" in text
    assert not marker.exists()


def test_an_os_system_payload_is_refused_too(tmp_path):
    root, _ = write_folder(tmp_path)
    marker = tmp_path / "pwned"

    class System:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    target = root / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(pickle.dumps({"data": System(), "labels": [0]}, protocol=2))
    with pytest.raises(BenchError, match=r"it refers to (posix|nt|os)\.system, .*refused without running it"):
        cifar(root)
    assert not marker.exists()
    # _codecs.encode (Python 3's protocol-2 bytes) only with latin-1: anything else is refused, not run
    target.write_bytes(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(BenchError, match=r"refers to _codecs.encode with str and encoding 'rot13'.*refused"):
        cifar(root)


def test_broken_or_misshapen_cifar10_files_are_one_line_errors(tmp_path):
    root, _ = write_folder(tmp_path)
    folder = root / "cifar-10-batches-py"
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[:200])
    with pytest.raises(BenchError) as info:
        cifar(root)
    assert f"{folder / 'test_batch'} is not a readable CIFAR-10 batch (truncated or corrupt?" in one_line(info.value)

    ok = np.zeros((2, 3072), np.uint8)
    cases = [({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]},
              r"its data is a float32 array of shape 2×3072, not an N×3072 uint8 array"),
             ({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]},
              r"its data is a uint8 array of shape 2×1024"),
             ({b"data": ok, b"labels": [0, 10]},
              r"its labels must be 2 integers 0–9 \(one per image\), got 10 at position 1"),
             ({b"data": ok, b"labels": [0]}, r"its labels must be 2 integers 0–9 .*got 1 values"),
             ({b"data": ok}, r"it has no labels entry"),
             ([1, 2], r"it holds a list, not a dict")]
    for content, message in cases:
        (folder / "test_batch").write_bytes(py2_pickle(content))
        with pytest.raises(BenchError, match=f"{re.escape(str(folder / 'test_batch'))} is not a genuine CIFAR-10 "
                                             f"batch: {message}") as info:
            cifar(root)
        one_line(info.value)
    (folder / "test_batch").write_bytes(good)
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"a"] * 9}))
    with pytest.raises(BenchError, match=r"batches.meta is not a genuine CIFAR-10 batches.meta: its label_names "
                                         r"must be a list of 10 strings"):
        cifar(root)


# ----------------------------------------------------------------------------------------- checkpoints

def test_a_malicious_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2, 2), "bias": Payload(marker)}, path)
    with pytest.raises(BenchError) as info:
        load_user(None, _target_="torch.nn.Linear", checkpoint=str(path), in_features=2, out_features=2)
    text = one_line(info.value)
    assert text.startswith(f"model 'user': {path} holds Python objects other than tensors (builtins.exec); it was "
                           f"refused without running it")
    assert "save model.state_dict() with torch.save" in text
    with pytest.raises(BenchError, match="holds Python objects other than tensors .*refused without running it"):
        _load_state(torch.nn.Linear(2, 2), path, "user")
    assert not marker.exists()


def test_a_directory_as_weights_is_named_a_directory(tmp_path):
    folder = tmp_path / "weights.pt"
    folder.mkdir()
    with pytest.raises(BenchError) as info:
        load_user(None, _target_="torch.nn.Linear", checkpoint=str(folder), in_features=2, out_features=2)
    assert one_line(info.value).startswith(f"model 'user': checkpoint {folder} is a directory, not a file; ")
    with pytest.raises(BenchError, match=f"weights file {re.escape(str(folder))} is a directory, not a file; "):
        load_torchvision(None, arch="resnet18", weights=str(folder))
    with pytest.raises(BenchError, match=f"model 'user': {re.escape(str(folder))} is a directory, not a file; "):
        _load_state(torch.nn.Linear(2, 2), folder, "user")
    ckpts = tmp_path / "ck"
    (ckpts / "ckpt-5.pt").mkdir(parents=True)
    (ckpts / "training.json").write_text('{"checkpoints": [5]}')

    class Shapes:
        image_shape, num_classes = (1, 28, 28), 10

    with pytest.raises(BenchError, match=r"ckpt-5.pt is a directory, not a file; iterations in .*: \[5\]"):
        load_checkpoint(Shapes(), dir=str(ckpts))


def test_truncated_and_corrupt_checkpoints_are_called_so(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), good)
    cases = {"truncated.pt": good.read_bytes()[:100], "garbage.pt": b"not a checkpoint at all " * 8, "empty.pt": b""}
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(BenchError) as info:
            _load_state(torch.nn.Linear(4, 3), path, "user")
        text = one_line(info.value)
        assert text.startswith(f"model 'user': {path} is not a readable PyTorch file (truncated or corrupt?: ")
        assert "holds Python objects" not in text and "pickled model" not in text
    with pytest.raises(BenchError, match=r"truncated.pt is not a readable PyTorch file \(truncated or corrupt\?: "
                                         r"RuntimeError: PytorchStreamReader failed"):
        _load_state(torch.nn.Linear(4, 3), tmp_path / "truncated.pt", "user")


class Wide(torch.nn.Module):
    def __init__(self, width: int, layers: range):
        super().__init__()
        self.blocks = torch.nn.ModuleDict({f"encoder_block_with_a_rather_long_name_{i}": torch.nn.Linear(width, width)
                                           for i in layers})


def test_a_shape_mismatch_lists_whole_keys_and_shapes_in_one_line(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(Wide(8, range(0, 10)).state_dict(), path)  # layers 0–9 of width 8
    model = Wide(16, range(5, 15))  # layers 5–14 of width 16: 5 of another shape, 5 missing, 5 unexpected
    with pytest.raises(BenchError) as info:
        _load_state(model, path, "user")
    text = one_line(info.value)
    prefix = f"model 'user': {path} does not fit the architecture: "
    assert text.startswith(prefix)
    kinds = re.fullmatch(r"size mismatch in 10 keys \((.*)\); 10 keys of the model missing from the file \((.*)\); "
                         r"10 unexpected keys in the file \((.*)\)", text[len(prefix):])
    assert kinds, text
    name = r"blocks\.encoder_block_with_a_rather_long_name_\d+\.(weight|bias)"
    shape, missing, unexpected = (k.split("; ") for k in kinds.groups())
    assert len(shape) == len(missing) == len(unexpected) == 4
    assert all(re.fullmatch(f"{name}: file (8×8|8), model (16×16|16)", s) for s in shape[:3])
    assert all(re.fullmatch(f"{name}: model (16×16|16)", s) for s in missing[:3])
    assert all(re.fullmatch(f"{name}: file (8×8|8)", s) for s in unexpected[:3])
    assert shape[3] == missing[3] == unexpected[3] == "… and 7 more"
    assert shape[0] == "blocks.encoder_block_with_a_rather_long_name_5.weight: file 8×8, model 16×16"
    # not strict: missing and unexpected keys are allowed, other shapes are not
    with pytest.raises(BenchError, match=r"does not fit the architecture: size mismatch in 10 keys \(.*\)$") as info:
        _load_state(model, path, "user", strict=False)
    assert "missing" not in str(info.value)
    # one key: the torchvision message of a head for another number of classes
    small = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(128, 10).state_dict(), small)
    with pytest.raises(BenchError) as info:
        _load_state(torch.nn.Linear(512, 1000), small, "user")
    assert one_line(info.value).endswith("does not fit the architecture: size mismatch in 2 keys "
                                         "(weight: file 10×128, model 1000×512; bias: file 10, model 1000)")
