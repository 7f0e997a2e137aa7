"""The run specification: the composed Hydra config, checked whole and once, as typed values.

``build_spec(cfg)`` is the only reader of a run's raw config. It checks every key — type, range, choice,
unknown keys (listing the valid ones), plug-in names (plain names inside the plug-in folders) and plug-in
parameters (by constructing the dataset, the method and the replacement function) — and returns a frozen
``RunSpec`` that everything downstream (bench/run/job.py, bench/run/evaluate.py, the tables' provenance) takes
as it is. It writes nothing: a refused config leaves no trace on disk. Loading the model (which may train
and cache the embedded CNN, or read a large file) is the job's first step, after its folder is locked.

The run-wide keys below mirror conf/config.yaml key by key (a test checks that they agree); each protocol's
settings are declared, with their checks and defaults, in its own file (bench/protocols/), and the spec builds the
run's protocols from their blocks (``RunSpec.protocols``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .. import checks, plugins, protocols
from ..engine.scoring import SCORES, TARGETS   # DEFINITIONS §1
from ..errors import BenchError
from ..protocols import Protocol, RunInfo
from .config import plain

ORDERS = ("morf", "lerf", "random")           # DEFINITIONS §4; the random baseline is always evaluated
REGION_KINDS = ("tiles", "slic")              # DEFINITIONS §3, §9
REGION_SCORES = ("sum", "mean")
PRECISIONS = ("fp32", "bf16", "fp16")
#: Keys that do not change the numbers: a job may be resumed with other values.
RUNTIME_KEYS = ("batch_size", "num_workers", "device", "cache_dir", "resume")
#: Keys that say which part of a run a job computes; shards of one run share everything else.
SHARD_KEYS = ("shard", "num_shards")
#: The keys a config group's node may have.
NODE_KEYS = {"method": ("name", "plugin", "pooling", "params"), "dataset": ("name", "plugin", "params"),
             "model": ("name", "kind", "input", "params"), "perturbation": ("name", "params")}
MODEL_INPUT_KEYS = ("resize", "crop", "mean", "std", "channels")


@dataclass(frozen=True)
class Plugin:
    """A config group's choice: its name in the tables, its parameters (recorded as JSON) and, for
    methods, datasets and replacement functions, the constructed object."""

    name: str
    params: dict[str, Any]
    obj: Any = None
    plugin: str = ""   # file in methods/ or datasets/; the model's kind


@dataclass(frozen=True)
class RunSpec:
    method: Plugin
    pooling: str
    dataset: Plugin
    model: Plugin
    perturbation: Plugin
    patch: int
    steps: int
    repeats: int
    n_images: int
    batch_size: int
    num_workers: int
    device: torch.device
    seed: int
    target: str
    score: str
    bootstrap: int
    save_heatmaps: int
    cache_dir: str
    orders: tuple[str, ...]
    per_repeat: bool
    precision: str
    channels_last: bool
    compile: bool
    metrics: tuple[str, ...]
    protocols: tuple[Protocol, ...]   # the protocols of ``metrics``, in catalogue order, with their checked settings
    regions: dict[str, Any]
    block_size: int
    resume: bool
    shard: int
    num_shards: int
    randomise_layers: int   # the method explains f⁽ᵏ⁾, the protocols evaluate the model (DEFINITIONS §10)
    input_noise: float | str   # σ of the seeded Gaussian noise on the model inputs, or "auto" (DEFINITIONS §10)
    config: dict[str, Any] = field(repr=False)   # the resolved config, as checked (config.yaml, manifest)

    @property
    def n_blocks(self) -> int:
        return -(-self.n_images // self.block_size)

    def blocks(self) -> list[tuple[int, int, int]]:
        """(block, first image, stop) of this job's shard: contiguous, in dataset order."""
        lo = self.shard * self.n_blocks // self.num_shards
        hi = (self.shard + 1) * self.n_blocks // self.num_shards
        return [(b, b * self.block_size, min((b + 1) * self.block_size, self.n_images)) for b in range(lo, hi)]

    def run_config(self) -> dict[str, Any]:
        """The configuration without the runtime and shard keys and without the settings of protocols the run
        does not compute: what the numbers depend on."""
        others = set(protocols.available()) - set(self.metrics)
        return {k: v for k, v in self.config.items() if k not in RUNTIME_KEYS + SHARD_KEYS and k not in others}

    def protocol(self, name: str) -> Protocol:
        """The run's protocol ``name`` (with its settings)."""
        return next(p for p in self.protocols if p.name == name)


def resolve_device(name: str, here: bool = True) -> torch.device:
    """The device ``name`` names; ``here=False``: only its spelling is checked (a job for another machine),
    and ``auto`` stands for CUDA."""
    if name == "auto":
        return torch.device("cuda" if not here or torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BenchError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise BenchError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and here:
        if not torch.cuda.is_available():
            raise BenchError(f"device={name} requested but CUDA is not available here; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


# ------------------------------------------------------------------------------------ the schema

def _pos(key):
    return lambda v: checks.integer(key, v, low=1)


def _nonneg(key):
    return lambda v: checks.integer(key, v, low=0)


#: Every top-level scalar key of conf/config.yaml: its check (returning the typed value).
SCALARS: dict[str, Callable[[Any], Any]] = {
    "patch": _pos("patch"), "steps": _pos("steps"), "repeats": _pos("repeats"), "n_images": _pos("n_images"),
    "batch_size": _pos("batch_size"), "num_workers": lambda v: checks.integer("num_workers", v, 0, 256),
    "device": lambda v: checks.text("device", v),
    "seed": lambda v: checks.integer("seed", v, 0, 2 ** 63 - 1),
    "target": lambda v: checks.choice("target", v, TARGETS), "score": lambda v: checks.choice("score", v, SCORES),
    "bootstrap": _pos("bootstrap"), "save_heatmaps": _nonneg("save_heatmaps"),
    "cache_dir": lambda v: checks.text("cache_dir", v),
    "orders": lambda v: checks.choices("orders", v, ORDERS),
    "per_repeat": lambda v: checks.boolean("per_repeat", v),
    "precision": lambda v: checks.choice("precision", v, PRECISIONS),
    "channels_last": lambda v: checks.boolean("channels_last", v),
    "compile": lambda v: checks.boolean("compile", v),
    "metrics": lambda v: checks.choices("metrics", v, protocols.available()),
    "block_size": _pos("block_size"), "resume": lambda v: checks.boolean("resume", v),
    "shard": _nonneg("shard"), "num_shards": _pos("num_shards"),
    "randomise_layers": _nonneg("randomise_layers"),
    "input_noise": lambda v: v if v == "auto" else checks.number("input_noise (a σ ≥ 0 or auto)", v, low=0),
}
def _slic_checks(block: str) -> dict[str, Callable[[Any], Any]]:
    """The checks of SLIC's settings (bench/engine/superpixels.py)."""
    return {"n_segments": lambda v: checks.integer(f"{block}.n_segments", v, low=2),
            "compactness": lambda v: None if v is None else checks.number(f"{block}.compactness", v, low=0,
                                                                          low_open=True),
            "sigma": lambda v: checks.number(f"{block}.sigma", v, low=0),
            "max_num_iter": lambda v: checks.integer(f"{block}.max_num_iter", v, low=1)}


#: The keys of conf/regions/<kind>.yaml, by kind.
REGION_KEYS = {"tiles": ("kind", "score"), "slic": ("kind", "score", *_slic_checks("regions"))}


def _regions(node: Any) -> dict[str, Any]:
    """The checked regions node (conf/regions/): tiles of ``patch`` (DEFINITIONS §3) or per-image SLIC superpixels."""
    if not isinstance(node, Mapping):
        raise BenchError(f"regions must be chosen from conf/regions/ (regions=tiles or regions=slic), got {node!r}")
    kind = checks.choice("regions.kind", node.get("kind"), REGION_KINDS)
    _unknown("regions", node, REGION_KEYS[kind])
    _missing("regions", node, REGION_KEYS[kind])
    out = {"kind": kind, "score": checks.choice("regions.score", node["score"], REGION_SCORES)}
    if kind == "slic":
        out.update({k: check(node[k]) for k, check in _slic_checks("regions").items()})
    return out


def top_keys() -> tuple[str, ...]:
    """Every top-level key of the composed config: the scalars, the config groups, and the protocols' blocks."""
    return tuple(SCALARS) + tuple(protocols.settings_blocks()) + tuple(NODE_KEYS) + ("regions",)


def _unknown(where: str, keys, valid) -> None:
    extra = [k for k in keys if k not in valid]
    if extra:
        name = f"{where}.{extra[0]}" if where else extra[0]
        raise BenchError(f"unknown setting '{name}'; valid {'settings' if not where else where + ' keys'}: "
                         f"{', '.join(valid)}")


def _missing(where: str, conf: Mapping, keys) -> None:
    absent = [k for k in keys if k not in conf]
    if absent:
        raise BenchError(f"setting '{where + '.' if where else ''}{absent[0]}' is missing from the configuration")


def _node(group: str, conf: Mapping) -> dict:
    node = conf.get(group)
    if not isinstance(node, Mapping):
        raise BenchError(f"{group} must be chosen from conf/{group}/ ({group}=<name>), got {node!r}")
    _unknown(group, node, NODE_KEYS[group])
    if group == "model" and node.get("kind") in ("torchvision", "timm") and isinstance(node.get("params"), Mapping) \
            and not node["params"].get("arch"):  # (conf/model/torchvision.yaml, timm.yaml name the model after it)
        raise BenchError(f"model={node['kind']} needs model.params.arch: a {node['kind']} classification "
                         f"architecture, e.g. " + ("convnext_tiny, efficientnet_b0, vit_b_16" if node["kind"] ==
                                                   "torchvision" else "vit_tiny_patch16_224, convnext_atto, resnet18"))
    if not isinstance(node.get("name"), str) or not node["name"]:
        raise BenchError(f"{group}.name must be a non-empty string, got {node.get('name')!r}")
    params = node.get("params")
    if params is not None and not isinstance(params, Mapping):
        raise BenchError(f"{group}.params must be a mapping of keyword arguments, got {params!r}")
    return {**node, "params": dict(params or {})}


def _model(node: dict) -> Plugin:
    from ..models import check_params

    kind = checks.choice("model.kind", node.get("kind"), _model_kinds())
    inputs = node.get("input")
    if inputs is not None:
        if not isinstance(inputs, Mapping):
            raise BenchError(f"model.input must be a mapping ({', '.join(MODEL_INPUT_KEYS)}), got {inputs!r}")
        _unknown("model.input", inputs, MODEL_INPUT_KEYS)
    check_params(kind, node["params"])
    if kind == "torchvision":
        import torchvision

        known = torchvision.models.list_models(module=torchvision.models)  # the classification architectures
        arch = node["params"].get("arch", "resnet18")
        if arch not in known:
            close = [a for a in known if str(arch).split("_")[0] in a][:6] or known[:8]
            raise BenchError(f"model.params.arch={arch} is not a torchvision classification architecture; e.g. "
                             f"{', '.join(close)} (torchvision.models.list_models() has all {len(known)})")
    if kind == "timm":
        from ..models.hub import check_timm_arch

        check_timm_arch(node["params"]["arch"])
    return Plugin(node["name"], node["params"], None, kind)


def _model_kinds() -> tuple[str, ...]:
    from ..models import MODELS

    return tuple(MODELS)


def _ships(model, dataset) -> bool:
    """Whether the embedded model's weights for these settings ship with the package (nothing to train or cache)."""
    from ..models import embedded, embedded_vit

    where = embedded if model.plugin == "embedded_cnn" else embedded_vit
    try:
        return where.shipped_key(dataset, **{k: v for k, v in model.params.items() if k != "cache_dir"}) is not None
    except (BenchError, TypeError):
        return False


def build_spec(conf: Mapping[str, Any], here: bool = True, dataset: Any = None) -> RunSpec:
    """Check the composed, resolved config ``conf`` (a plain dict or a DictConfig) and build the run's spec.
    Raises ``BenchError`` (one line) for the first problem found; writes nothing. ``here=False``: the spec of
    a job that will run on another machine (a cluster's compute node, bench/run/slurm.py): whether its device
    exists is left to that machine. ``dataset``: a ``bench.api.Dataset`` object used instead of building the
    config's (the Python API's images in memory, bench/run/python_api.py); it is checked like any other."""
    conf = plain(conf)
    clash = sorted(set(protocols.available()) & (set(SCALARS) | set(NODE_KEYS) | {"regions", "experiment"}))
    if clash:
        raise BenchError(f"protocols/{clash[0]}.py: '{clash[0]}' is already a setting of the run; rename the protocol's "
                         f"file")
    blocks = protocols.settings_blocks()
    _unknown("", conf, top_keys())
    _missing("", conf, tuple(SCALARS) + tuple(NODE_KEYS) + ("regions",))
    values = {key: check(conf[key]) for key, check in SCALARS.items()}
    settings = {name: protocols.protocol_class(name).from_config(conf.get(name)) for name in blocks}
    v = values
    if v["shard"] >= v["num_shards"]:
        raise BenchError(f"shard must be an integer with 0 ≤ shard < num_shards={v['num_shards']}, got {v['shard']}")
    n_blocks = -(-v["n_images"] // v["block_size"])
    if v["num_shards"] > n_blocks:
        raise BenchError(f"num_shards={v['num_shards']} but n_images={v['n_images']} makes only {n_blocks} block(s) "
                         f"of block_size={v['block_size']}; choose num_shards ≤ {n_blocks} or a smaller block_size")
    device = resolve_device(v["device"], here)
    if v["precision"] == "fp16" and device.type == "cpu":
        raise BenchError("precision=fp16 needs a GPU; use precision=bf16 or fp32 on the CPU")
    orders = tuple(o for o in ORDERS if o in set(v["orders"]) | {"random"})
    for name in protocols.required():
        if name not in v["metrics"]:
            raise BenchError(f"metrics must include {name} (every run computes it), got {list(v['metrics'])}")
    metrics = tuple(m for m in protocols.available() if m in v["metrics"])
    run_protocols = tuple(settings.get(m) or protocols.protocol_class(m)() for m in metrics)
    for p in run_protocols:
        missing = [o for o in p.orders if o not in orders]
        if missing:
            raise BenchError(f"metrics=[…, {p.name}] needs the {', '.join(missing)} order: add {', '.join(missing)} "
                             f"to orders (orders=[morf,lerf,random])")

    nodes = {g: _node(g, conf) for g in NODE_KEYS}
    from ..engine.replacement import make_replacement
    from ..engine.pooling import POOLINGS

    if dataset is None:
        dataset = plugins.build("datasets", nodes["dataset"], "dataset")
    _, h, w = dataset.image_shape
    if v["patch"] > min(h, w):
        raise BenchError(f"patch={v['patch']} is larger than the {h}×{w} images of dataset "
                         f"'{nodes['dataset']['name']}'; choose 1 ≤ patch ≤ {min(h, w)}")
    if v["n_images"] > len(dataset):
        raise BenchError(f"n_images={v['n_images']} but dataset '{nodes['dataset']['name']}' has only {len(dataset)} "
                         f"evaluation images; choose n_images ≤ {len(dataset)}")
    regions = _regions(conf["regions"])
    method = plugins.build("methods", nodes["method"], "method")
    info = RunInfo(image_shape=tuple(dataset.image_shape), orders=orders, steps=v["steps"], patch=v["patch"],
                   regions=regions["kind"], fixed_heatmaps=bool(method.fixed_heatmaps), method=nodes["method"]["name"])
    for p in run_protocols:
        if p.attributes_inputs and info.fixed_heatmaps:
            raise BenchError(f"metrics=[…, {p.name}] attributes perturbed copies of the images, but "
                             f"method={info.method} has heatmaps of the images themselves only")
        p.check(info)
    if info.fixed_heatmaps and (v["randomise_layers"] or v["input_noise"]):
        raise BenchError(f"method={info.method} has fixed heatmaps of the dataset's images: randomise_layers and "
                         f"input_noise need heatmaps computed by the method; set both to 0")
    method.prepare(dataset, v["n_images"], nodes["dataset"]["name"])
    pooling = nodes["method"].get("pooling") or method.pooling
    checks.choice("method.pooling", pooling, POOLINGS)
    pert = nodes["perturbation"]
    replacement = make_replacement(pert["name"], **pert["params"])
    model = _model(nodes["model"])
    if model.plugin in ("embedded_cnn", "embedded_vit") and not _ships(model, dataset):
        checks.writable_dir("cache_dir", os.path.expanduser(v["cache_dir"]))  # it trains into cache_dir: fails now
    return RunSpec(
        method=Plugin(nodes["method"]["name"], nodes["method"]["params"], method, nodes["method"]["plugin"]),
        pooling=pooling,
        dataset=Plugin(nodes["dataset"]["name"], nodes["dataset"]["params"], dataset, nodes["dataset"]["plugin"]),
        model=model, perturbation=Plugin(pert["name"], pert["params"], replacement, pert["name"]),
        patch=v["patch"], steps=v["steps"],
        repeats=v["repeats"],
        n_images=v["n_images"], batch_size=v["batch_size"], num_workers=v["num_workers"], device=device,
        seed=v["seed"], target=v["target"], score=v["score"], bootstrap=v["bootstrap"],
        save_heatmaps=v["save_heatmaps"], cache_dir=os.path.expanduser(v["cache_dir"]), orders=orders,
        per_repeat=v["per_repeat"], precision=v["precision"], channels_last=v["channels_last"],
        compile=v["compile"], metrics=metrics, protocols=run_protocols, regions=regions,
        block_size=v["block_size"], resume=v["resume"], shard=v["shard"], num_shards=v["num_shards"],
        randomise_layers=v["randomise_layers"], input_noise=v["input_noise"], config=conf)
