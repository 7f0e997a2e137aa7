"""Models of the two hubs, from local files only (optional extras): ``model=timm`` (any timm architecture by
name, ``pip install 'bench[timm]'``) and ``model=huggingface`` (a local Hugging Face image-classification folder,
``pip install 'bench[huggingface]'``). Nothing is downloaded; a missing file is one line saying which file to put
where. The preprocessing each model expects comes from its own configuration — timm's pretrained config, the
folder's ``preprocessor_config.json`` — through the resolvers ``${bench_timm_input:arch,key}`` and
``${bench_hf_input:path,key}`` (conf/model/timm.yaml, huggingface.yaml), and is recorded in the
``preprocessing`` column.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..interfaces import Dataset
from ..errors import BenchError

INPUT_KEYS = ("resize", "crop", "mean", "std")  # what the input resolvers (here and bench/models/) give


def check_input_key(resolver: str, key: str) -> None:
    if key not in INPUT_KEYS:
        raise BenchError(f"{resolver}: key must be one of {', '.join(INPUT_KEYS)}, got '{key}'")


def _need(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(f"this model needs the {module} package: pip install 'bench[{extra}]'") from None


# ------------------------------------------------------------------------------------------------- timm


def _timm_cfg(arch: str):
    timm = _need("timm", "timm")
    try:
        return timm.models.get_pretrained_cfg(str(arch))
    except Exception:
        return None


def timm_input(arch: str | None, key: str) -> Any:
    """timm's preprocessing for ``arch`` (its default pretrained config): crop = the input size, resize =
    floor(crop / crop_pct) (timm's eval transform), mean, std; None where timm has no config."""
    check_input_key("bench_timm_input", key)
    cfg = _timm_cfg(arch) if arch else None
    if cfg is None or cfg.input_size is None:
        return None
    crop = int(cfg.input_size[-1])
    return {"crop": crop, "resize": int(math.floor(crop / (cfg.crop_pct or 1.0))), "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std]}[key]


def check_timm_arch(arch: str) -> None:
    timm = _need("timm", "timm")
    if not timm.is_model(str(arch)):
        close = timm.list_models(f"{str(arch).split('_')[0]}*")[:6] or timm.list_models("resnet1*")[:3]
        raise BenchError(f"model.params.arch={arch} is not a timm architecture; e.g. {', '.join(close)}")


#: timm.create_model's keywords that make timm read or fetch weights itself (model.params.weights does it here)
TIMM_FILE_KEYS = ("checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay")


def load_timm(dataset: Dataset, arch: str | None = None, weights: str | None = None, num_classes: int | None = None,
              strict: bool = True, cache_dir: str | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, **kwargs)`` with the weights of ``weights``: a file
    (``.safetensors``, or a state_dict ``.pth``/``.bin`` read with ``weights_only=True``), ``null`` = timm's
    ``model.safetensors`` in the local Hugging Face cache (``huggingface_hub.try_to_load_from_cache``, no
    network), or ``random``."""
    from .weights import _load_state, log

    timm = _need("timm", "timm")
    if not arch:
        raise BenchError("model=timm needs model.params.arch: a timm architecture, e.g. vit_tiny_patch16_224, "
                         "convnext_atto, resnet18")
    check_timm_arch(arch)
    foreign = [k for k in TIMM_FILE_KEYS if k in kwargs]
    if foreign:  # timm would read (or fetch) a file itself, past the suite's checks
        raise BenchError(f"model.params.{foreign[0]} is not taken: timm would read that file itself; give the "
                         f"weights as model.params.weights=FILE (.safetensors or a state_dict, read safely)")
    path = None
    if weights is None:
        cfg = _timm_cfg(arch)
        repo = getattr(cfg, "hf_hub_id", None)
        if not repo:
            raise BenchError(f"model '{arch}': timm names no weights for it; set model.params.weights=FILE or random")
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, "model.safetensors")
        if not isinstance(found, str):
            raise BenchError(f"model '{arch}': no weights file — put model.safetensors of the Hugging Face repo {repo} "
                             f"in the local Hugging Face cache (huggingface-cli download {repo} on a machine with "
                             f"internet, then copy ~/.cache/huggingface) or set model.params.weights=/path/to/"
                             f"model.safetensors; nothing is downloaded")
        path = Path(found)
    elif str(weights) != "random":
        path = Path(str(weights)).expanduser()
    extra = {} if num_classes is None else {"num_classes": int(num_classes)}
    try:
        model = timm.create_model(str(arch), pretrained=False, **extra, **kwargs)
    except TypeError as exc:
        raise BenchError(f"model '{arch}': bad parameters {kwargs}: {exc}") from None
    if path is None:
        log.warning("model '%s' has random weights (model.params.weights=random)", arch)
    else:
        _load_state(model, path, str(arch), strict=bool(strict))
    return model.eval()


# ------------------------------------------------------------------------------------------ Hugging Face


def _processor(path: str | None) -> dict:
    from ..checks import regular_file

    f = Path(str(path)).expanduser() / "preprocessor_config.json" if path else None
    if f is not None:
        regular_file("model.params.path", f)  # a FIFO would block the config's resolution
    if f is None or not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except ValueError:
        return {}


def hf_input(path: str | None, key: str) -> Any:
    """The folder's ``preprocessor_config.json``: ``size`` {shortest_edge} → resize (then ``crop_size`` → crop),
    {height, width} → resize to exactly that; ``image_mean``, ``image_std``. None where it says nothing."""
    check_input_key("bench_hf_input", key)
    p = _processor(path)
    size, crop = p.get("size"), p.get("crop_size")
    if key == "resize" and p.get("do_resize", True) and size is not None:
        if isinstance(size, int):
            return size
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
        if "height" in size and "width" in size:
            return [int(size["height"]), int(size["width"])]
    if key == "crop" and p.get("do_center_crop", False) and crop is not None:
        return int(crop) if isinstance(crop, int) else int(crop.get("height", crop.get("width")))
    if key in ("mean", "std") and p.get("do_normalize", True):
        value = p.get("image_mean" if key == "mean" else "image_std")
        return None if value is None else [float(v) for v in value]
    return None


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class HFLogits(nn.Module):
    """A Hugging Face image classifier as ``x ↦ logits`` (``pixel_values=x``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def _no_remote_code(folder: Path, transformers) -> None:
    """Refuse, before transformers reads it, a folder whose model is code of its own: ``auto_map`` in its
    config.json (or a ``model_type`` transformers does not know), which only ``trust_remote_code`` would run."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"model 'huggingface': {folder / 'config.json'} is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise BenchError(f"model 'huggingface': {folder / 'config.json'} is not a JSON object")
    if "auto_map" in config:
        raise BenchError(f"model 'huggingface': {folder} defines its model in its own Python code (auto_map in "
                         f"config.json), which the suite never runs; export the model as a torch.nn.Module of your "
                         f"own and use model=user")
    known = getattr(transformers.models.auto.configuration_auto, "CONFIG_MAPPING_NAMES", {})
    if known and config.get("model_type") not in known:
        raise BenchError(f"model 'huggingface': {folder}/config.json names model_type={config.get('model_type')!r}, "
                         f"which transformers {transformers.__version__} does not have (remote code is never run)")


def _check_shards(folder: Path) -> None:
    """The shards a sharded folder's ``model.safetensors.index.json`` names: plain files of the folder."""
    from ..checks import regular_file

    index = folder / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BenchError(f"model 'huggingface': {index} is not a readable weight index ({type(exc).__name__}); "
                         f"save the model again (save_pretrained)") from None
    for name in sorted(map(str, shards)):
        if Path(name).name != name or name in ("", ".", ".."):
            raise BenchError(f"model 'huggingface': {index} names the shard {name!r} outside the folder; a shard "
                             f"is a file of {folder}")
        regular_file("model.params.path", folder / name)


def load_huggingface(dataset: Dataset, path: str | None = None, cache_dir: str | None = None) -> nn.Module:
    """``AutoModelForImageClassification.from_pretrained(path, local_files_only=True)`` (safetensors preferred)."""
    if not path:
        raise BenchError("model=huggingface needs model.params.path: a local folder with config.json and "
                         "model.safetensors (save_pretrained's output)")
    from ..checks import regular_file

    folder = Path(str(path)).expanduser()
    for f in (folder, *(folder / n for n in ("config.json", *HF_WEIGHTS))):  # never opened if special
        regular_file("model.params.path", f)
    if not (folder / "config.json").is_file():
        raise BenchError(f"model 'huggingface': {folder / 'config.json'} does not exist; put a Hugging Face "
                         f"image-classification folder (config.json, model.safetensors) at {folder}")
    weights = [n for n in HF_WEIGHTS if (folder / n).is_file()]
    if not weights:
        raise BenchError(f"model 'huggingface': no weights in {folder}; put model.safetensors there (save_pretrained)")
    if weights[0] == "model.safetensors.index.json":
        _check_shards(folder)
    transformers = _need("transformers", "huggingface")
    _no_remote_code(folder, transformers)
    try:
        model = transformers.AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False,
            use_safetensors=weights[0] != "pytorch_model.bin")
    except Exception as exc:  # an unknown architecture, a config that does not match the weights …
        raise BenchError(f"model 'huggingface': {folder} cannot be loaded ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from None
    return HFLogits(model).eval()
