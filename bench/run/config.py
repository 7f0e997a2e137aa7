"""The configuration before it is checked: Hydra's composition of conf/, the resolvers its YAML uses, and the
record of a command that the job folder's owner writes (``.hydra/``).

``compose(overrides)`` gives the resolved config as a plain dict, as the command line would compose it — for the
Python API, tools and tests. The resolvers name sweep and job folders after their overrides (conf/config.yaml)
and fill a model's input preprocessing from its published weights (conf/model/*.yaml).
"""

from __future__ import annotations

import hashlib
import re

from omegaconf import DictConfig, OmegaConf

from ..errors import BenchError
from ..plugins import CONF_DIR


# -------------------------------------------------------------------------------- folder names

_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+\-@\[\]:]")


def dirname_of(text: str, max_len: int = 200) -> str:
    """One readable, collision-free path component for ``text`` (a job's overrides): characters that are
    unsafe in file names become ``_`` and a short hash of the original is appended then, or when cut."""
    text = str(text) or "default"
    safe = _UNSAFE.sub("_", text)
    if safe != text or len(safe) > max_len or safe.startswith("."):
        safe = f"{safe.lstrip('.')[:max_len - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return safe


def sweep_name(overrides) -> str:
    """The folder name of a sweep: its command-line overrides, sorted, joined by ``__``."""
    return dirname_of("__".join(sorted(str(o) for o in overrides)) or "default")


def register_resolvers() -> None:
    """``${bench_dirname:…}`` and ``${bench_sweep_name:…}`` for conf/config.yaml. The sweep name is cached,
    so every job of a sweep (whose own ``hydra.overrides.task`` differ) resolves the sweep's folder."""
    if not OmegaConf.has_resolver("bench_dirname"):
        OmegaConf.register_new_resolver("bench_dirname", dirname_of)
    if not OmegaConf.has_resolver("bench_sweep_name"):
        OmegaConf.register_new_resolver("bench_sweep_name", sweep_name, use_cache=True)
    from ..models import register_input_resolver

    register_input_resolver()
    register_protocols()


def register_protocols() -> None:
    """The protocols' config blocks — each protocol's declared settings and defaults (bench/protocols/) — as the
    config ``bench_protocols`` that conf/config.yaml lists in its defaults, so that ``<protocol>.<setting>=…``
    overrides them like any key. Protocol files on ``BENCH_PLUGIN_PATH`` are found here too."""
    from hydra.core.config_store import ConfigStore

    from .. import protocols

    ConfigStore.instance().store(name="bench_protocols", node=protocols.settings_blocks())



def compose(overrides=()) -> dict:
    """The resolved config of conf/config.yaml with ``overrides`` (Hydra's compose API), as a plain dict."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return plain(cfg)


def hydra_record(cfg: DictConfig, hc: DictConfig | None = None) -> dict[str, str]:
    """What Hydra would have written to ``.hydra/`` (it is told not to: a refused command must not touch a
    finished folder); the job folder's owner writes it once the folder is claimed. ``hc``: the job's
    ``hydra`` node (default: the running job's)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get() if hc is None else hc
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})),
            "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))}


def plain(conf) -> dict:
    """A resolved plain dict of ``conf``; interpolation errors (``${oc.env:…}``) are one line."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if OmegaConf.is_config(conf):
        from ..models import register_input_resolver

        register_input_resolver()  # ${bench_torchvision_input:…} of conf/model/torchvision.yaml
        try:
            conf = OmegaConf.to_container(conf, resolve=True)
        except OmegaConfBaseException as exc:
            raise BenchError(f"the configuration cannot be resolved: {' '.join(str(exc).split())}") from None
    return dict(conf)


register_protocols()  # at import: whoever composes conf/ with Hydra's own API finds the protocols' blocks
