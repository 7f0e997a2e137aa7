"""Composites: which rule each linear layer gets, by position (first layer), type (conv, dense) or name.

The *first layer* is decided on the data flow, not on the module order: it is every Conv2d/Linear that
receives the model's input itself (or a reshape of it, e.g. Flatten → Linear). Rules with constant
inputs (z^B, w², flat) can only be used there; the mechanism refuses them anywhere else, and refuses a
composite with a first-layer rule on a model in which no layer receives the input directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Union

from torch import nn

from .rules import Epsilon, Gamma, Rule, ZBox, ZPlus


@dataclass(frozen=True)
class Composite:
    """Rule of a layer: ``names[name]`` if given, else ``first`` for a layer fed by the model's input,
    else ``conv`` for Conv2d / ``dense`` for Linear, else ``default``. ``attention``: how relevance passes
    attention, normalisation and element-wise non-linearities of a transformer (``attnlrp`` or ``cp``,
    bench/lrp/transformer.py); None: such layers are refused."""

    default: Rule = field(default_factory=Epsilon)
    conv: Optional[Rule] = None
    dense: Optional[Rule] = None
    first: Optional[Rule] = None
    names: Mapping[str, Rule] = field(default_factory=dict)
    attention: Optional[str] = None

    def rule(self, name: str, module: nn.Module, first: bool) -> Rule:
        if name in self.names:
            return self.names[name]
        if first and self.first is not None:
            return self.first
        if isinstance(module, nn.Conv2d) and self.conv is not None:
            return self.conv
        if isinstance(module, nn.Linear) and self.dense is not None:
            return self.dense
        return self.default


@dataclass(frozen=True)
class FromFunction:
    """Adapter for a plain ``rule_for(name, module) -> Rule`` function (the same rule at every position)."""

    fn: Callable[[str, nn.Module], Rule]
    first = None
    attention = None

    def rule(self, name: str, module: nn.Module, first: bool) -> Rule:
        return self.fn(name, module)


def as_composite(rules: Union[Rule, Composite, Callable]) -> Union[Composite, FromFunction]:
    """A Rule (everywhere), a Composite, or a ``rule_for(name, module)`` function."""
    if isinstance(rules, Rule):
        return Composite(default=rules)
    if isinstance(rules, (Composite, FromFunction)):
        return rules
    if callable(rules):
        return FromFunction(rules)
    raise TypeError(f"expected a Rule, a Composite or a function (name, module) -> Rule, got {rules!r}")


def deep_taylor(first: Optional[Rule] = None) -> Composite:
    """Deep Taylor decomposition (deep Taylor Sec. 5–6): z^B in the first layer, z⁺ in every layer above."""
    return Composite(default=ZPlus(), first=first or ZBox())


def attnlrp(epsilon: float = 1e-6, conv: Optional[Rule] = None, dense: Optional[Rule] = None) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): LRP-ε on the linear layers (the paper's ε is a stabiliser), the
    identity rule on LayerNorm and element-wise non-linearities, the softmax's rule and the uniform rule on the
    attention's matrix products (bench/lrp/transformer.py). ``conv``/``dense``: other rules for those layers
    (e.g. LRP-γ, as the paper tunes for vision transformers)."""
    return Composite(default=Epsilon(epsilon), conv=conv, dense=dense, attention="attnlrp")


def cp_lrp(epsilon: float = 1e-6, conv: Optional[Rule] = None, dense: Optional[Rule] = None) -> Composite:
    """CP-LRP (Ali et al., ICML 2022): as :func:`attnlrp`, but the attention weights are constants — relevance
    reaches the tokens through the values only."""
    return Composite(default=Epsilon(epsilon), conv=conv, dense=dense, attention="cp")


def epsilon_gamma_box(epsilon: float = 0.25, gamma: float = 0.25, first: Optional[Rule] = None) -> Composite:
    """z^B in the first layer, LRP-γ on the other convolutions, LRP-ε on the dense layers
    (Montavon et al. 2019; Zennit's ``EpsilonGammaBox``)."""
    return Composite(default=Epsilon(epsilon), conv=Gamma(gamma), dense=Epsilon(epsilon), first=first or ZBox())
