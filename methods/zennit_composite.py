"""Zennit's LRP composites (Anders et al. 2021, ``zennit``) as a method, to compare Zennit's rules with the suite's
own: ``method=zennit method.params.composite=EpsilonPlusFlat method.params.canonizers=[SequentialMergeBatchNorm]``.

R = Zennit's ``Gradient`` attributor with the composite (and canonizers) for the one-hot output of the target
class: the relevance at the input. Composites with a z^B first layer (``EpsilonGammaBox``) get the data's pixel
range through the normalisation as ``low``/``high``. Optional extra: ``pip install 'bench[zennit]'``.
"""

import inspect

import torch

from bench.interfaces import Context, Method
from bench.checks import text
from bench.errors import BenchError

BOX = ("low", "high")  # composite arguments taken from the data's pixel range


def _zennit():
    try:
        import zennit.attribution
        import zennit.canonizers
        import zennit.composites
        import zennit.torchvision
    except ImportError:
        raise BenchError("method=zennit needs the zennit package: pip install 'bench[zennit]'") from None
    return zennit


def _zennit_class(obj, base) -> bool:
    """Whether a configured name resolved to one of Zennit's own ``base`` classes (never other code)."""
    return inspect.isclass(obj) and issubclass(obj, base) and obj.__module__.split(".")[0] == "zennit"


class ZennitComposite(Method):
    pooling = "sum"

    def __init__(self, composite: str = "EpsilonPlusFlat", canonizers=(), composite_kwargs=None) -> None:
        zennit = _zennit()
        self.composite = text("method.params.composite", composite)
        cls = getattr(zennit.composites, self.composite, None)
        named = sorted(n for n, o in vars(zennit.composites).items() if inspect.isclass(o)
                       and issubclass(o, zennit.composites.Composite) and "Composite" not in n)
        if not _zennit_class(cls, zennit.composites.Composite):
            raise BenchError(f"method.params.composite={composite} is not a zennit composite; e.g. {', '.join(named)}")
        self.kwargs = dict(composite_kwargs or {})
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "canonizers", *BOX}
        bad = [k for k in self.kwargs if k not in accepted]
        if bad:
            raise BenchError(f"method.params.composite_kwargs.{bad[0]}: {composite} takes "
                             f"{', '.join(sorted(accepted))}")
        self.box = all(k in inspect.signature(cls.__init__).parameters for k in BOX)
        self.canonizer_names = [text("method.params.canonizers[]", c) for c in (canonizers or ())]
        for name in self.canonizer_names:
            c = getattr(zennit.torchvision, name, None) or getattr(zennit.canonizers, name, None)
            if not _zennit_class(c, zennit.canonizers.Canonizer):
                raise BenchError(f"method.params.canonizers: '{name}' is not a zennit canonizer; e.g. "
                                 f"SequentialMergeBatchNorm (VGG with BatchNorm), ResNetCanonizer, VGGCanonizer")
        self.cls = cls

    def make_composite(self, x: torch.Tensor, ctx: Context):
        zennit = _zennit()
        canonizers = [(getattr(zennit.torchvision, n, None) or getattr(zennit.canonizers, n))()
                      for n in self.canonizer_names]
        kwargs = dict(self.kwargs)
        if self.box:
            low, high = ctx.normalization.input_bounds(x)
            kwargs["low"], kwargs["high"] = low.expand_as(x), high.expand_as(x)
        return self.cls(canonizers=canonizers, **kwargs)

    def attribute(self, model, x: torch.Tensor, target: torch.Tensor, ctx: Context) -> torch.Tensor:
        from zennit.attribution import Gradient

        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            with Gradient(model=model, composite=self.make_composite(x, ctx)) as attributor:
                _, relevance = attributor(x, lambda out: torch.zeros_like(out).scatter_(1, target.view(-1, 1), 1.0))
        return relevance.detach()
