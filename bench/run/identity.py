"""A run's identity, which decides whether a job folder's finished blocks may be continued (bench/run/jobdir.py):
the configuration without runtime keys, the code that computes the numbers, and the model's weights — of what the
run computes: the settings and the files of the protocols it does not run are not part of it.

The code is found, not listed: the imports of the modules that compute numbers, followed statically, plus
the job's plug-in files (the method's, the dataset's and the run's protocols', and the plug-ins they wrap), so
that no hand-kept list can go stale. bench/protocols/__init__.py imports no protocol file statically, so a
protocol's file is hashed only when the run computes it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

JOB_FORMAT = 3  # 2: the identity holds only the protocols a run computes (their settings and files);
# 3: + model architecture, dataset and library versions, and a digest of every block and table file

#: The modules whose code computes numbers; their imports inside the package are followed (statically,
#: so the same files are hashed whatever the process imported before).
_NUMBER_ROOTS = ("run/evaluate.py", "run/summary.py", "models/__init__.py", "run/tables.py", "run/spec.py")


def _package_imports(path: Path, package: Path) -> set[Path]:
    """Files of the bench package that ``path`` imports (``from .x``, ``from ..x``, ``bench.x``), at module
    level or inside functions — except inside a module's command-line ``main``, which computes no number."""
    tree = ast.parse(path.read_bytes())
    for node in list(tree.body):
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            tree.body.remove(node)
    found = set()
    for node in ast.walk(tree):
        targets: list[tuple[Path, list[str]]] = []
        if isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            targets.append((base / (node.module or "").replace(".", "/"), [a.name for a in node.names]))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "bench":
            targets.append((package.parent / node.module.replace(".", "/"), [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            targets += [(package.parent / a.name.replace(".", "/"), []) for a in node.names
                        if a.name.split(".")[0] == "bench"]
        for mod, members in targets:
            for cand in [mod.with_suffix(".py"), mod / "__init__.py"] + [mod / f"{m}.py" for m in members]:
                if cand.is_file() and package in cand.resolve().parents:
                    found.add(cand.resolve())
    return found


def number_files(plugin_files: list[Path]) -> list[Path]:
    package = Path(__file__).resolve().parents[1]
    todo = [package / r for r in _NUMBER_ROOTS] + [Path(f).resolve() for f in plugin_files]
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        todo += _package_imports(f, package)
    return sorted(seen)


def plugin_files(*objects: Any) -> list[Path]:
    """The plug-in files behind ``objects`` (a method, a dataset) and the plug-ins they wrap."""
    from ..interfaces import Dataset, Method

    files, todo = [], list(objects)
    while todo:
        obj = todo.pop()
        module = sys.modules.get(type(obj).__module__)
        if getattr(module, "__file__", None):
            files.append(Path(module.__file__))
        todo += [v for v in vars(obj).values() if isinstance(v, (Method, Dataset))] if hasattr(obj, "__dict__") else []
    return files


def code_sha(*plugins: Any) -> str:
    """Hash of the code that computes the numbers: the package modules imported (transitively) by the
    number-computing ones, and the job's plug-in files. ``BENCH_CODE_VERSION`` (e.g. a git commit)
    replaces the hash: the user vouches for the code then."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return f"version:{os.environ['BENCH_CODE_VERSION']}"
    package = Path(__file__).resolve().parents[1]
    h = hashlib.blake2b(digest_size=16)
    for f in number_files(plugin_files(*plugins)):
        h.update(str(f.relative_to(package) if package in f.parents else f.name).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


def model_sha(model) -> str:
    """Hash of the model's weights and buffers (a retrained or changed model is another run)."""
    import torch

    h = hashlib.blake2b(digest_size=16)
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_arch(model) -> str:
    """Hash of the model's architecture: its module tree as printed (types, sizes, activations, settings) and,
    for a model class defined outside torch and the hubs (a user's or a plug-in's own file), that file's code —
    two models with equal weights but another forward are other runs."""
    import inspect

    h = hashlib.blake2b(digest_size=16)
    h.update(repr(model).encode())
    files: set[str] = set()
    for module in model.modules():
        cls = type(module)
        h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        if cls.__module__.split(".")[0] in ("torch", "torchvision", "timm", "transformers"):
            continue
        try:
            files.add(inspect.getsourcefile(cls) or "")
        except TypeError:
            pass
    for f in sorted(filter(None, files)):
        try:
            h.update(Path(f).read_bytes())
        except OSError:
            h.update(f.encode())
    return h.hexdigest()


def data_sha(dataset, n_images: int) -> str:
    """Hash of the images a run reads: the first ``n_images`` (image id, label, and for files: path and size in
    bytes, for arrays: the array's bytes), the dataset's preprocessing and normalisation. Cheap (``stat``, no
    decoding): a folder whose files were replaced, renamed or resized is another dataset."""
    import numpy as np
    import torch

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{type(dataset).__module__}.{type(dataset).__qualname__}:{dataset.preprocessing}:"
             f"{dataset.normalization}:{dataset.image_shape}:{dataset.num_classes}:{n_images}".encode())
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple) and len(samples[0]) == 3:
        for image_id, path, label in samples[:n_images]:
            try:
                size = os.stat(path).st_size
            except OSError:
                size = -1
            h.update(f"{image_id}\0{path}\0{size}\0{label}\n".encode())
        return h.hexdigest()
    images = getattr(dataset, "images", None)
    if isinstance(images, (np.ndarray, torch.Tensor)):
        arr = images.numpy() if isinstance(images, torch.Tensor) else images
        index = getattr(dataset, "test_idx", None)
        used = arr[np.asarray(index)[:n_images]] if index is not None else arr[:n_images]
        h.update(np.ascontiguousarray(used).tobytes())
        labels = getattr(dataset, "labels", None)
        if labels is not None:
            labels = np.asarray(labels)
            h.update(np.ascontiguousarray(labels[np.asarray(index)[:n_images]] if index is not None
                                          else labels[:n_images]).tobytes())
    h.update("\n".join(dataset.image_id(i) for i in range(min(n_images, len(dataset)))).encode())
    return h.hexdigest()


#: The libraries every run's numbers depend on, and those a model kind or method plug-in adds.
CORE_LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "scikit-image")
PLUGIN_LIBRARIES = {"timm": "timm", "huggingface": "transformers", "captum": "captum", "zennit": "zennit"}


def library_versions(spec=None) -> dict[str, str]:
    """The versions of the libraries whose code computes the run's numbers: torch's kernels, NumPy, SciPy,
    scikit-image, and the hub or attribution library the run's model kind or method plug-in uses (installing
    an unrelated library does not change a run's identity)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    used = ([PLUGIN_LIBRARIES[p] for p in (spec.model.plugin, spec.method.plugin) if p in PLUGIN_LIBRARIES]
            if spec is not None else [])
    for name in (*CORE_LIBRARIES, *used):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def inputs_sha(spec) -> str | None:
    """Hash of what the method and dataset objects hold beyond their configuration (their ``inputs_sha``:
    precomputed heatmaps read from files, the Python API's images in memory); None when neither has one."""
    parts = [getattr(o, "inputs_sha", None) for o in (spec.method.obj, spec.dataset.obj)]
    if not any(parts):
        return None
    return parts[0] if not parts[1] else parts[1] if not parts[0] else hashlib.blake2b(
        f"{parts[0]}:{parts[1]}".encode(), digest_size=16).hexdigest()


def manifest_of(spec, model) -> dict[str, Any]:
    """The job's identity (everything its numbers depend on) and block layout, as job.json holds it."""
    conf, code, weights = (spec.run_config(), code_sha(spec.method.obj, spec.dataset.obj, *spec.protocols),
                           model_sha(model))
    arch, data, libs = model_arch(model), data_sha(spec.dataset.obj, spec.n_images), library_versions(spec)
    inputs = inputs_sha(spec)
    key = hashlib.blake2b(json.dumps([conf, code, weights, arch, data, libs] + ([inputs] if inputs else []),
                                     sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    blocks = spec.blocks()
    return dict(format=JOB_FORMAT, run_key=key, run_config=conf, code_sha=code, model_sha=weights,
                model_arch=arch, data_sha=data, libraries=libs, **({"inputs_sha": inputs} if inputs else {}),
                shard=spec.shard, num_shards=spec.num_shards, n_images=spec.n_images, block_size=spec.block_size,
                n_blocks=spec.n_blocks, blocks=[blocks[0][0], blocks[-1][0] + 1])


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def incompatibility(old: dict, new: dict) -> str | None:
    """Why the results of manifest ``old`` cannot be continued by job ``new`` (None: they can)."""
    if old.get("format") != new["format"]:
        return "results in another layout"
    if (old.get("shard"), old.get("num_shards")) != (new["shard"], new["num_shards"]):
        return (f"shard {old.get('shard')} of num_shards={old.get('num_shards')} "
                f"(this job is shard {new['shard']} of num_shards={new['num_shards']})")
    a, b = _flat(old.get("run_config", {})), _flat(new["run_config"])
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
    if diff:
        shown = ", ".join(f"{k}={a.get(k, '<unset>')} there, {b.get(k, '<unset>')} now" for k in diff[:3])
        return f"results of a different configuration ({shown}{', …' if len(diff) > 3 else ''})"
    if old.get("code_sha") != new["code_sha"]:
        return "results computed by different code (the bench sources or the method/dataset plug-in changed)"
    if old.get("model_sha") != new["model_sha"]:
        return "results computed with different model weights (the cached model was retrained or changed)"
    # (a caller that does not load the model — bench/run/slurm.py — leaves model_arch out: not compared then)
    if "model_arch" in new and old.get("model_arch") != new["model_arch"]:
        return "results of a different model architecture (its modules or its class's code changed)"
    if "data_sha" in new and old.get("data_sha") != new["data_sha"]:
        return ("results computed on different images (the dataset's files, their order, labels or "
                "preprocessing changed)")
    if "libraries" in new and old.get("libraries") != new["libraries"]:
        a, b = old.get("libraries") or {}, new["libraries"]
        diff = [f"{k} {a.get(k, '<none>')} there, {b.get(k, '<none>')} now" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)]
        return f"results computed with other library versions ({', '.join(diff[:3])})"
    if old.get("inputs_sha") != new.get("inputs_sha"):
        return "results computed from different inputs (the precomputed heatmaps or the images in memory changed)"
    return None
