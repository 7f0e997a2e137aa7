"""Captum's attribution methods (Kokhlikyan et al. 2020, ``captum.attr``) as a method:
``method=captum method.params.name=IntegratedGradients method.params.kwargs={n_steps: 32}``.

R = ``<name>(model).attribute(x, target=c, **kwargs)``, optionally inside ``NoiseTunnel`` (``noise_tunnel:
{nt_type: smoothgrad, nt_samples: 16, stdevs: 0.15}``). Layer methods (``LayerGradCam`` …) need ``layer`` (a module
name of the model, e.g. ``features.28``); their map is upsampled bilinearly to the input
(``LayerAttribution.interpolate``), summed over the layer's channels and returned as relevance of the first
input channel (pooling ``sum`` gives back the map). Methods that draw random numbers (``NoiseTunnel``,
``GradientShap``, ``ShapleyValueSampling``, ``FeaturePermutation``, ``Lime``, ``KernelShap``) are called image by
image with torch's and NumPy's global generators seeded by (run seed, image id) and restored afterwards, so an
image's heatmap does not depend on its batch.
Optional extra: ``pip install 'bench[captum]'``.
"""

import inspect

import numpy as np
import torch

from bench.interfaces import Context, Method
from bench.checks import integer, text
from bench.errors import BenchError
from bench.engine.seeding import derive_seed

RANDOM = {"GradientShap", "LayerGradientShap", "ShapleyValueSampling", "FeaturePermutation", "Lime", "KernelShap",
          "LayerFeaturePermutation"}
TUPLES = ("sliding_window_shapes", "strides")  # Hydra gives lists; Captum wants tuples
NOT_ATTRIBUTIONS = ("Attribution", "GradientAttribution", "LayerAttribution", "NeuronAttribution",
                    "PerturbationAttribution", "NoiseTunnel", "LimeBase", "DataLoaderAttribution")


def _captum():
    try:
        import captum.attr
    except ImportError:
        raise BenchError("method=captum needs the captum package: pip install 'bench[captum]'") from None
    return captum.attr


class CaptumAttribution(Method):
    pooling = "sum"

    def __init__(self, name: str = "Saliency", kwargs=None, layer: str | None = None, noise_tunnel=None) -> None:
        attr = _captum()
        self.name = text("method.params.name", name)
        cls = getattr(attr, self.name, None)
        usable = sorted(n for n, o in vars(attr).items() if inspect.isclass(o) and issubclass(o, attr.Attribution)
                        and o.__module__.split(".")[0] == "captum"  # (Captum's own classes only, never other code)
                        and n not in NOT_ATTRIBUTIONS and not n.startswith(("Neuron", "LLM", "RemoteLLM")))
        if self.name not in usable:
            raise BenchError(f"method.params.name={name} is not a Captum attribution usable here; one of "
                             f"{', '.join(usable)}")
        self.cls = cls
        self.is_layer = issubclass(cls, attr.LayerAttribution)
        if self.is_layer and layer is None:
            raise BenchError(f"method.params.name={name} is a layer method: set method.params.layer=<module name>, "
                             f"e.g. features.28 (VGG) or layer4 (ResNet)")
        if not self.is_layer and layer is not None:
            raise BenchError(f"method.params.layer is for Captum's layer methods; {name} is not one")
        self.layer = None if layer is None else text("method.params.layer", layer)
        self.kwargs = {k: tuple(v) if k in TUPLES and isinstance(v, (list, tuple)) else v
                       for k, v in dict(kwargs or {}).items()}
        accepted = set(inspect.signature(cls.attribute).parameters) - {"self", "inputs", "target"}
        bad = [k for k in self.kwargs if k not in accepted and "kwargs" not in accepted]
        if bad:
            raise BenchError(f"method.params.kwargs.{bad[0]}: {name}.attribute takes {', '.join(sorted(accepted))}")
        self.noise_tunnel = None if noise_tunnel is None else dict(noise_tunnel)
        if self.noise_tunnel is not None:
            nt = set(inspect.signature(attr.NoiseTunnel.attribute).parameters) - {"self", "inputs"}
            bad = [k for k in self.noise_tunnel if k not in nt]
            if bad:
                raise BenchError(f"method.params.noise_tunnel.{bad[0]}: NoiseTunnel takes nt_type, nt_samples, "
                                 f"nt_samples_batch_size, stdevs, draw_baseline_from_distrib")
            if "nt_samples" in self.noise_tunnel:
                integer("method.params.noise_tunnel.nt_samples", self.noise_tunnel["nt_samples"], low=1)
        self.random = self.noise_tunnel is not None or self.name in RANDOM

    def algorithm(self, model):
        """The Captum object for ``model`` (``NoiseTunnel`` around it when configured)."""
        attr = _captum()
        if self.is_layer:
            modules = dict(model.named_modules())
            if self.layer not in modules:
                names = [n for n in modules if n][:8]
                raise BenchError(f"method.params.layer={self.layer} is not a module of the model; e.g. "
                                 f"{', '.join(names)}")
            algo = self.cls(model, modules[self.layer])
        else:
            algo = self.cls(model)
        return attr.NoiseTunnel(algo) if self.noise_tunnel is not None else algo

    def _kwargs(self, x: torch.Tensor) -> dict:
        kwargs = dict(self.kwargs)
        b = kwargs.get("baselines")
        if self.name in ("GradientShap", "DeepLiftShap", "LayerGradientShap") and isinstance(b, (int, float)):
            kwargs["baselines"] = x.new_full((1, *x.shape[1:]), float(b))  # a distribution of one baseline
        return {**kwargs, **(self.noise_tunnel or {})}

    def _call(self, algo, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r = algo.attribute(x, target=target, **self._kwargs(x))
        if self.is_layer:
            r = _captum().LayerAttribution.interpolate(r, tuple(x.shape[-2:]), interpolate_mode="bilinear")
            out = torch.zeros_like(x)
            out[:, 0] = r.sum(1)
            return out
        return r

    def attribute(self, model, x: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
        algo = self.algorithm(model)
        x = x.detach().requires_grad_(True)  # (Captum would set it itself, with a warning per call)
        with torch.enable_grad():
            if not self.random:
                return self._call(algo, x, target).detach()
            out = []
            devices = [x.device] if x.device.type == "cuda" else []
            numpy_state = np.random.get_state()
            try:
                for i, image_id in enumerate(ctx.image_ids):  # per image: its own seeded draws, whatever the batch
                    seed = derive_seed(ctx.seed, "captum", str(image_id))
                    with torch.random.fork_rng(devices=devices):
                        torch.manual_seed(seed)
                        np.random.seed(seed % 2 ** 32)  # (GradientShap draws its coefficients with NumPy)
                        out.append(self._call(algo, x[i:i + 1], target[i:i + 1]).detach())
            finally:
                np.random.set_state(numpy_state)  # the caller's NumPy stream is left as it was
            return torch.cat(out)
