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

from .rules import Constant, ConstantScale, Epsilon, Gamma, Identity, Rule, Softmax, Uniform, ZBox, ZPlus


@dataclass(frozen=True)
class Composite:
    """Rule of a layer: ``names[name]`` if given, else ``first`` for a layer fed by the model's input,
    else ``conv`` for Conv2d / ``dense`` for Linear, else ``default``.

    The rules of a transformer's other operations (bench/lrp/rules.py, evaluated by bench/lrp/transformer.py);
    None: a model with such an operation is refused by name. ``elementwise``: GELU, SiLU, Tanh (``Identity``);
    ``norm``: LayerNorm, RMSNorm (``ConstantScale``); ``softmax``: the attention weights (``Softmax``, or
    ``Constant`` for CP-LRP); ``product``: the attention's products q kᵀ and A v (``Uniform``)."""

    default: Rule = field(default_factory=Epsilon)
    conv: Optional[Rule] = None
    dense: Optional[Rule] = None
    first: Optional[Rule] = None
    names: Mapping[str, Rule] = field(default_factory=dict)
    elementwise: Optional[Identity] = None
    norm: Optional[ConstantScale] = None
    softmax: Optional[Union[Softmax, Constant]] = None
    product: Optional[Uniform] = None

    def __post_init__(self) -> None:
        if (self.softmax is None) != (self.product is None):
            raise ValueError("a Composite needs both the softmax and the product rule of the attention, or neither")

    @property
    def transformer(self) -> bool:
        """Whether any rule of a transformer's operations is set (bench/lrp/transformer.py is then used)."""
        return any(r is not None for r in (self.elementwise, self.norm, self.softmax))

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
    elementwise = norm = softmax = product = None
    transformer = False

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


def attnlrp(epsilon: float = 0.0, conv: Optional[Rule] = None, dense: Optional[Rule] = None,
            softmax: Softmax = Softmax(), product: Uniform = Uniform()) -> Composite:
    """AttnLRP (Achtibat et al., ICML 2024): LRP-ε on the linear layers (the paper's ε is a stabiliser; at the default
    ε = 0 the layers' gradient, as LXT's efficient implementation, which divides by nothing), the identity rule on
    element-wise non-linearities, LayerNorm with its scale constant, the softmax rule (with bias, Prop. 3.1) on the
    attention weights and the uniform rule on the attention's products. ``conv``/``dense``: other rules for those
    layers (LRP-γ, as LXT's vision-transformer example)."""
    return Composite(default=Epsilon(epsilon), conv=conv, dense=dense, elementwise=Identity(), norm=ConstantScale(),
                     softmax=softmax, product=product)


def cp_lrp(epsilon: float = 0.0, conv: Optional[Rule] = None, dense: Optional[Rule] = None,
           product: Uniform = Uniform()) -> Composite:
    """CP-LRP (Ali et al., ICML 2022): as :func:`attnlrp`, but the attention weights are constants — relevance
    reaches the tokens through the values only (LXT's ``cp_LRP`` map for torchvision's ViT)."""
    return Composite(default=Epsilon(epsilon), conv=conv, dense=dense, elementwise=Identity(), norm=ConstantScale(),
                     softmax=Constant(), product=product)


def epsilon_gamma_box(epsilon: float = 0.25, gamma: float = 0.25, first: Optional[Rule] = None) -> Composite:
    """z^B in the first layer, LRP-γ on the other convolutions, LRP-ε on the dense layers
    (Montavon et al. 2019; Zennit's ``EpsilonGammaBox``)."""
    return Composite(default=Epsilon(epsilon), conv=Gamma(gamma), dense=Epsilon(epsilon), first=first or ZBox())
