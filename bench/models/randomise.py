"""Cascading model randomisation (Adebayo et al., NeurIPS 2018; DEFINITIONS §10 "Reactivity to model randomisation").

f⁽ᵏ⁾ is the model with its last k parameterised layers re-initialised: the modules that hold parameters of their
own (convolutions, linear layers, normalisation layers …), in the order the forward pass first calls them,
counted from the output. Each is re-initialised by its own ``reset_parameters()`` — the draws of its default
initialisation — under a generator seeded by (seed, the layer's name), so f⁽ᵏ⁾ is the same on every machine and
f⁽ᵏ⁺¹⁾ re-initialises the same layers as f⁽ᵏ⁾ and one more. The model itself is never changed (a copy is).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..engine.seeding import derive_seed
from ..errors import BenchError


def parameterised_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The names of the modules holding parameters of their own, in the order one forward pass of ``example``
    (a batch of model inputs) first calls them; a module without ``reset_parameters`` is left out (it could not be
    re-initialised by its default initialisation)."""
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    seen: set[str] = set()

    def hook(module: nn.Module, *_):
        name = names.get(module)
        if name is not None and name not in seen:
            seen.add(name)
            order.append(name)

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if any(True for _ in m.parameters(recurse=False)) and callable(getattr(m, "reset_parameters", None))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return order


def randomised(model: nn.Module, k: int, seed: int, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with its last ``k`` parameterised layers (:func:`parameterised_layers`) re-initialised
    by seeded draws of their default initialisation; ``k = 0``: the model itself. Refuses, in one line, a ``k``
    larger than the model's number of such layers."""
    if k == 0:
        return model
    layers = parameterised_layers(model, example)
    if not layers:
        raise BenchError("randomise_layers: the model has no layer with parameters and reset_parameters() to "
                         "re-initialise")
    if k > len(layers):
        raise BenchError(f"randomise_layers={k} but the model has only {len(layers)} parameterised layer(s) "
                         f"({', '.join(layers[-3:])} last); choose randomise_layers ≤ {len(layers)}")
    out = copy.deepcopy(model)
    modules = dict(out.named_modules())
    for name in layers[len(layers) - k:]:
        fresh = copy.deepcopy(modules[name]).cpu()  # drawn on the CPU: the same weights whatever the device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "randomise_layers", name))
            fresh.reset_parameters()
        modules[name].load_state_dict(fresh.state_dict())
    return out.eval()
