"""The embedded CNN of the Quick start ships with the package (bench/models/embedded.py ``SHIPPED``): loaded after
its digest is checked, never retrained or cached, so that ``python -m bench`` prints the README's line on any
machine; ``python -m bench.models --ship`` remakes it."""

import hashlib
import os
import re
import subprocess
import sys

import pytest
import torch

from bench.errors import BenchError
from bench.models import embedded
from bench.run.config import compose
from bench import plugins

from conftest import ROOT, scaled


def _default():
    conf = compose([])
    return plugins.build("datasets", conf["dataset"], "dataset"), dict(conf["model"]["params"])


def test_the_shipped_file_matches_its_digest_and_is_small():
    assert len(embedded.SHIPPED) == 1
    (key, digest), = embedded.SHIPPED.items()
    path = embedded.shipped_file(key)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_size < 1_000_000


def test_the_default_model_is_the_shipped_one_and_nothing_is_trained_or_cached(tmp_path, monkeypatch):
    dataset, params = _default()
    monkeypatch.setattr(embedded, "_train", lambda *a, **k: pytest.fail("the shipped model was retrained"))
    model = embedded.load_embedded_cnn(dataset, str(tmp_path / "cache"), **params)
    assert not (tmp_path / "cache").exists()
    (key, _), = embedded.SHIPPED.items()
    state = torch.load(embedded.shipped_file(key), weights_only=True)
    assert all(torch.equal(model.state_dict()[k], state[k]) for k in state)


def test_shipped_key_names_the_shipped_settings_only():
    dataset, params = _default()
    (key, _), = embedded.SHIPPED.items()
    assert embedded.shipped_key(dataset, **params) == key
    assert embedded.shipped_key(dataset, **dict(params, epochs=1)) is None
    assert embedded.shipped_key(dataset, **dict(params, seed=1)) is None


def test_a_changed_shipped_file_is_refused_in_one_line(tmp_path, monkeypatch):
    (key, _), = embedded.SHIPPED.items()
    data = bytearray(embedded.shipped_file(key).read_bytes())
    data[-100] ^= 1
    (tmp_path / embedded.shipped_file(key).name).write_bytes(bytes(data))
    monkeypatch.setattr(embedded, "SHIPPED_DIR", tmp_path)
    dataset, params = _default()
    with pytest.raises(BenchError, match="do not match their digest") as err:
        embedded.load_embedded_cnn(dataset, str(tmp_path / "cache"), **params)
    assert "\n" not in str(err.value) and "python -m bench.models --ship" in str(err.value)


def test_remaking_the_shipped_weights(tmp_path, monkeypatch, capsys):
    """``python -m bench.models --ship`` retrains exactly as the cache would: on this CPU the same bytes; on another
    CPU training may differ in the last bits, so the test asks for the same predictions on the evaluation images,
    not the bytes."""
    from bench.models.__main__ import main

    (key, digest), = embedded.SHIPPED.items()
    dataset, params = _default()
    shipped = embedded.load_embedded_cnn(dataset, str(tmp_path / "cache"), **params)
    monkeypatch.setattr(embedded, "SHIPPED_DIR", tmp_path / "shipped")
    assert main(["--ship"]) == 0
    path = tmp_path / "shipped" / f"embedded_cnn-{key}.pt"
    remade = hashlib.sha256(path.read_bytes()).hexdigest()
    out = capsys.readouterr().out
    assert f"wrote {path} (SHA-256 {remade})" in out, out
    assert ("the same as the shipped digest" in out) == (remade == digest), out
    model = embedded.embedded_cnn()
    model.load_state_dict(torch.load(path, weights_only=True))
    x = dataset.normalization.normalize(torch.stack([dataset.get(i)[1] for i in range(len(dataset))]))
    with torch.no_grad():
        agree = (model.eval()(x).argmax(1) == shipped(x).argmax(1)).float().mean().item()
    assert agree >= 0.98, agree
    if remade != digest:
        print(f"remade weights differ from the shipped ones on this CPU (predictions agree on {agree:.1%})")


def test_the_quick_start_prints_the_readme_line(tmp_path):
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    line = next(ln for ln in quick.splitlines() if ln.startswith("lrp_eps "))
    numbers = re.search(r"(\d+\.\d+ ± \d+\.\d+ \[\d+\.\d+, \d+\.\d+\])\s+\d+$", line)
    assert numbers and numbers.group(1), line
    env = {**os.environ, "BENCH_CACHE_DIR": str(tmp_path / "empty-cache")}
    env.pop("BENCH_CODE_VERSION", None)
    proc = subprocess.run([sys.executable, "-m", "bench", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=scaled(300), env=env)
    assert proc.returncode == 0, proc.stderr
    assert line.strip() in proc.stdout, proc.stdout
    cache = tmp_path / "empty-cache"  # the run may make the folder (its writability is checked), never fill it
    assert not cache.exists() or not any(cache.iterdir()), sorted(cache.iterdir())  # nothing trained or cached
