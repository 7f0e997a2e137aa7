"""The protocol contract: what one file in ``bench/protocols/`` (or ``<dir>/protocols/`` of a folder on
``BENCH_PLUGIN_PATH``) declares, and the per-batch state it is handed.

A protocol is a frozen dataclass, subclass of :class:`Protocol`, whose fields are its **settings**
(:func:`setting`: default, check, help; the config block ``<name>:``, overridable as ``<name>.<setting>=…``).
Next to them it declares:

* ``needs`` — the shared per-batch state it reads besides the heatmap (:data:`NEEDS`), computed once per batch
  for all protocols of the run;
* ``launch(batch)`` — its device work on one batch of images, returning a function that makes its tidy
  table(s) on the host (``{table name: rows}``), so that the next batch's device work can start meanwhile;
* ``tables`` — the tables the report reads, with their columns and the keys that tell their rows apart;
* ``quantities`` and ``per_image(tables)`` — its per-image numbers with their direction (+1: higher is better,
  −1: lower is better, 0: not a comparison of methods, e.g. the random order's own value) and labels, from
  which summary.csv, the printed table and the report's tables are derived (and the metric card, DEFINITIONS §10);
* ``figures`` — the report's figures of its tables (:mod:`bench.report.figures` draws the kinds).

Nothing outside ``bench/protocols/`` names a protocol: the run, the summary and the report iterate over the
run's protocols and read these declarations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol as Interface

import pandas as pd
import torch

from .. import checks
from ..engine.replacement import SUBSTRATES, substrate
from ..engine.scoring import SCORES  # noqa: F401 (a protocol's own `score` setting chooses from these)
from ..errors import BenchError

#: The shared per-batch state a protocol may declare in ``needs`` (the heatmap and the images are always there).
NEEDS = {
    "regions": "the batch's regions: the tiles of `patch`, or each image's SLIC superpixels (regions=slic)",
    "region_orders": "the heatmap's MoRF and LeRF orders of those regions and the paired random order (seeded)",
    "pixel_orders": "the heatmap's MoRF order of the pixels and the paired random order of the pixels (seeded)",
}


# --------------------------------------------------------------------------------------------- settings

def setting(default: Any, check: Callable[[str, Any], Any], help: str = "") -> Any:
    """A protocol setting: a dataclass field with its default, its check ``check(key, value) -> typed value``
    (raising ``BenchError`` with one line) and a short help text."""
    return field(default=default, metadata={"check": check, "help": help})


def integer(low: int | None = None, high: int | None = None) -> Callable[[str, Any], int]:
    return lambda key, v: checks.integer(key, v, low, high)


def number(low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable[[str, Any], float]:
    return lambda key, v: checks.number(key, v, low, high, low_open)


def boolean() -> Callable[[str, Any], bool]:
    return lambda key, v: checks.boolean(key, v)


def choice(*options: str) -> Callable[[str, Any], str]:
    return lambda key, v: checks.choice(key, v, options)


def optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` or null (the protocol's own default applies)."""
    return lambda key, v: None if v is None else check(key, v)


def odd(low: int = 1) -> Callable[[str, Any], int]:
    """An odd integer ≥ ``low`` (a centred kernel, in pixels)."""
    def check(key: str, v: Any) -> int:
        v = checks.integer(key, v, low=low)
        if v % 2 == 0:
            raise BenchError(f"{key} must be an odd number of pixels (a centred kernel), got {v}")
        return v
    return check


def increasing_fractions(key: str, values: Any) -> tuple[float, ...]:
    """A non-empty, strictly increasing list of fractions in (0, 1]."""
    if not isinstance(values, (list, tuple)) or not values:
        raise BenchError(f"{key} must be a non-empty list of fractions in (0, 1], got {values!r}")
    out = tuple(float(checks.number(f"{key}[{i}]", v, low=0, high=1, low_open=True)) for i, v in enumerate(values))
    return _increasing(key, out, values)


def integers(low: int = 1) -> Callable[[str, Any], tuple[int, ...]]:
    """A non-empty, strictly increasing list of integers ≥ ``low``."""
    def check(key: str, values: Any) -> tuple[int, ...]:
        if isinstance(values, int) and not isinstance(values, bool):
            values = [values]
        if not isinstance(values, (list, tuple)) or not values:
            raise BenchError(f"{key} must be a non-empty list of integers ≥ {low}, got {values!r}")
        return _increasing(key, tuple(checks.integer(f"{key}[{i}]", v, low=low) for i, v in enumerate(values)), values)
    return check


def _increasing(key: str, out: tuple, given: Any) -> tuple:
    """``out`` when strictly increasing; else one line naming ``key`` and the values ``given``."""
    if any(b <= a for a, b in zip(out, out[1:])):
        raise BenchError(f"{key} must be strictly increasing, got {list(given)}")
    return out


def substrate_settings(default: str = "zero") -> dict[str, Any]:
    """The three settings of a §9 substrate (what removed pixels become: ``zero`` black, ``mean`` the dataset mean,
    ``image_mean`` the image's per-channel mean, ``blur`` the Gaussian blur of the image), for a protocol's fields:
    ``substrate: str = …; blur_sigma: float = …; blur_kernel: int = …`` (see :meth:`Batch.substrate`)."""
    return {"substrate": setting(default, choice(*SUBSTRATES), "what removed pixels become"),
            "blur_sigma": setting(5.0, number(0, low_open=True), "σ of the blur substrate (px)"),
            "blur_kernel": setting(11, odd(), "kernel size of the blur substrate (px)")}



# --------------------------------------------------------------------------------------------- quantities

@dataclass(frozen=True)
class Steps:
    """Where a quantity read from a curve has its per-step values, the items of its internal consistency (Cronbach's
    α, DEFINITIONS §10): in table ``table``, column ``value`` at steps ≥ 1 of order ``order``, minus those of order
    ``minus`` when given; ``from_start``: the item is the drop f(x⁽⁰⁾) − f(x⁽ᵏ⁾) (AOPC's summand) instead."""

    table: str
    order: str
    minus: str = ""
    from_start: bool = False
    value: str = "score_value"


@dataclass(frozen=True)
class Quantity:
    """One per-image number of a protocol (a row of summary.csv).

    ``direction``: +1 higher is better, −1 lower is better, 0 not a comparison of methods (a baseline's own
    value, a count). ``label``: its short name in tables and figures. ``where``: how it is taken, for captions.
    ``headline``: the protocol's one number (its column of the faithfulness table, its row of the metric card).
    ``printed``: its head in the table a run prints (``{L}``: the run's L), shown as ``print_as``: ``sem``
    (mean ± s.e.m.), ``ci`` (that and the 95% interval) or ``mean`` (4 significant digits).
    ``diagnostic``: listed after every protocol's quantities. ``undefined``: why no image may have a finite
    value, when that is not the model's NaN/inf outputs. ``unit``: what it is measured in; ``{score}`` stands for
    the unit of the score it was computed from (the protocol's ``score`` setting when it has one, else the run's:
    :data:`SCORE_UNITS`), e.g. ``"{score} × fraction of pixels"`` for an area under a score curve. ``when``: printed
    only for runs whose provenance (a summary row) it accepts; ``replaces``: for those runs it stands in for that
    quantity in comparisons (the combined table of a sweep, the report). ``steps``: where its per-step values are,
    for a quantity read from a curve with the same steps for every image (:class:`Steps`)."""

    name: str
    direction: int
    label: str
    where: str = "per image"
    headline: bool = False
    printed: str | None = None
    print_as: str = "sem"
    diagnostic: bool = False
    undefined: str = ""
    unit: str = "{score}"
    when: Callable[[Mapping[str, Any]], bool] | None = None
    replaces: str = ""
    steps: Steps | None = None


#: The unit of each score f_c (DEFINITIONS §1).
SCORE_UNITS = {"logit": "logit", "softmax": "probability", "log_softmax": "log-probability"}
#: The unit of an area under a score curve over the fraction of pixels changed (DEFINITIONS §9 AUC).
AREA = "{score} × fraction of pixels"


# --------------------------------------------------------------------------------------------- report

@dataclass(frozen=True)
class Table:
    """A table a protocol writes: ``<name>.parquet``. ``columns``: those the report needs (besides provenance).
    ``keys``: the columns that tell its rows of one run apart (those it has). ``per_heatmap``: its rows depend on
    the heatmaps only (not on patch, perturbation, steps …), so runs that share heatmaps share them (the report
    keeps the first run's)."""

    name: str
    columns: tuple[str, ...]
    per_heatmap: bool = False
    keys: tuple[str, ...] = ("image_id", "order", "step")


@dataclass(frozen=True)
class Figure:
    """A report figure of a protocol's table; ``kind`` names the drawing in :mod:`bench.report.figures`:

    * ``relative`` — ``value`` per step, the heatmap's order minus a baseline (the random order of the same run,
      or another method's run), a panel per dataset (``file`` with ``{baseline}``), and per patch size when a
      sweep has several (TNNLS Figs. 4, 8);
    * ``orders`` — ``score_value`` per step of each order with the random order (the curves themselves);
    * ``fraction`` — ``score_value`` against the % of pixels changed (``x``), a panel per ``panels`` entry
      ``(table, order, title, x label)``; protocols that name the same ``file`` share one figure;
    * ``scatter`` — per image ``value`` of each method against a reference method, with the diagonal;
    * ``box`` — box plots of ``value`` per method."""

    file: str
    kind: str
    table: str = ""
    value: str = ""
    label: str = ""
    x: str = ""
    panels: tuple[tuple[str, str, str, str], ...] = ()


# --------------------------------------------------------------------------------------------- the run

class Runner(Interface):
    """What a protocol may ask of the run (``batch.run``; bench/run/evaluate.py ``Evaluator``)."""

    seed: int
    batch_size: int
    image_hw: tuple[int, int]
    normalization: Any          # bench.interfaces.Normalization
    score: str                  # the run's f_c: logit | softmax | log_softmax
    pooling: str

    def logits(self, inputs: torch.Tensor) -> torch.Tensor: ...
    def scores(self, inputs: torch.Tensor, target: torch.Tensor, score: str | None = None) -> torch.Tensor: ...
    def attribute(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor: ...
    def heatmap(self, x: torch.Tensor, target: torch.Tensor, image_ids: list[str]) -> torch.Tensor: ...


@dataclass(frozen=True)
class RunInfo:
    """What a protocol may check against when the run is specified (:meth:`Protocol.check`)."""

    image_shape: tuple[int, int, int]   # C, H, W
    orders: tuple[str, ...]
    steps: int
    patch: int
    regions: str                        # tiles | slic
    fixed_heatmaps: bool                # the method has heatmaps of the dataset's images only (precomputed)
    method: str


class Shared:
    """The per-batch state computed once for all protocols of the run, on first use (:data:`NEEDS`)."""

    def __init__(self, make: Mapping[str, Callable[[], Any]]) -> None:
        self._make, self._values = dict(make), {}

    def get(self, name: str) -> Any:
        if name not in self._values:
            self._values[name] = self._make[name]()
        return self._values[name]


@dataclass
class Batch:
    """One batch of images as a protocol sees it (model inputs ``x``, raw pixels ``raw``, the explained ``target``,
    the unperturbed score ``f0`` (the run's score), the pooled ``heatmap`` (B, H, W)), the run (``run``) and the
    shared state it declared in ``needs``."""

    run: Runner
    image_ids: list[str]
    x: torch.Tensor
    raw: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor
    f0: torch.Tensor
    heatmap: torch.Tensor
    shared: Shared
    needs: frozenset[str] = frozenset()
    protocol: str = ""

    def _need(self, name: str) -> Any:
        if name not in self.needs:
            raise RuntimeError(f"protocol '{self.protocol}' reads batch.{name} but does not declare it: add "
                               f"'{name}' to its needs")
        return self.shared.get(name)

    @property
    def regions(self):
        """``bench.engine.regions.Regions`` of the batch (needs ``regions``)."""
        return self._need("regions")

    @property
    def region_orders(self) -> dict[str, torch.Tensor]:
        """(B, R) region orders ``morf``, ``lerf``, ``random`` (needs ``region_orders``)."""
        return self._need("region_orders")

    @property
    def pixel_orders(self) -> dict[str, torch.Tensor]:
        """(B, H·W) pixel orders ``morf`` and ``random`` (needs ``pixel_orders``)."""
        return self._need("pixel_orders")

    def per_image(self) -> dict[str, Any]:
        """The columns every per-image row of a table starts with: image_id, label, target_class (host arrays)."""
        return dict(image_id=self.image_ids, label=self.labels.cpu().numpy(), target_class=self.target.cpu().numpy())

    def scores(self, inputs: torch.Tensor, target: torch.Tensor, score: str | None = None) -> torch.Tensor:
        return self.run.scores(inputs, target, score)

    def substrate(self, kind: str, blur_sigma: float = 5.0, blur_kernel: int = 11) -> torch.Tensor:
        """What removed pixels become in a §9 protocol, (B, C, H, W) in model-input units: ``zero`` (black),
        ``mean`` (the dataset mean), ``image_mean`` (the per-channel mean of the image itself) or ``blur`` (the
        Gaussian blur of the image, ``blur_sigma``, kernel ``blur_kernel``)."""
        return substrate(kind, self.x, self.image_ids, self.run.seed, self.run.normalization, blur_sigma, blur_kernel)


# --------------------------------------------------------------------------------------------- the protocol

@dataclass(frozen=True)
class Protocol:
    """Base of every protocol (see the module docstring). Subclasses are frozen dataclasses whose fields are
    their settings (:func:`setting`)."""

    name: ClassVar[str] = ""                    # the file's name: metrics=[…, <name>], the config block <name>
    title: ClassVar[str] = ""                   # for people: "ROAD", "deletion"
    family: ClassVar[str] = "faithfulness"      # faithfulness | complexity | continuity (the report groups by it)
    required: ClassVar[bool] = False            # run by every run (metrics must list it)
    needs: ClassVar[tuple[str, ...]] = ()       # shared per-batch state read (NEEDS)
    orders: ClassVar[tuple[str, ...]] = ()      # region orders the run must have (orders=[…])
    attributes_inputs: ClassVar[bool] = False   # attributes inputs other than the images (refuses fixed heatmaps)
    tables: ClassVar[tuple[Table, ...]] = ()
    quantities: ClassVar[tuple[Quantity, ...]] = ()
    figures: ClassVar[tuple[Figure, ...]] = ()
    own_table: ClassVar[bool] = False           # the report writes <name>_table.{csv,md,tex} of its headline quantity

    # -- settings ------------------------------------------------------------------------------------------------
    @classmethod
    def settings(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The settings' defaults, as the config block ``<name>:`` holds them (plain values)."""
        return {k: list(f.default) if isinstance(f.default, tuple) else f.default for k, f in cls.settings().items()}

    @classmethod
    def from_config(cls, block: Any) -> "Protocol":
        """The protocol with the settings of its config block, each checked (unknown key, type, range: one
        line); settings the block leaves out keep their defaults."""
        fields = cls.settings()
        if block is None:
            block = {}
        if not isinstance(block, Mapping):
            raise BenchError(f"{cls.name} must be a mapping of {', '.join(fields) or 'no settings'}, got {block!r}")
        extra = [k for k in block if k not in fields]
        if extra:
            raise BenchError(f"unknown setting '{cls.name}.{extra[0]}'; valid {cls.name} keys: "
                             f"{', '.join(fields) or 'none'}")
        values = {k: f.metadata["check"](f"{cls.name}.{k}", block[k]) for k, f in fields.items() if k in block}
        return cls(**values)

    def values(self) -> dict[str, Any]:
        """The settings as plain values (recorded with the run)."""
        return {k: getattr(self, k) for k in self.settings()}

    def check(self, run: RunInfo) -> None:
        """Raise ``BenchError`` (one line) when the settings cannot serve this run (e.g. a size beyond the image);
        the checks every protocol shares (``orders``, ``attributes_inputs``) are made by the run spec."""

    # -- per batch -----------------------------------------------------------------------------------------------
    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]] | None:
        """The device work on one batch; returns the host work that makes the tidy rows ``{table: rows}``
        (None: nothing to write, e.g. a protocol computed from another's table)."""
        return None

    # -- per run ---------------------------------------------------------------------------------------------
    @classmethod
    def per_image(cls, tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame | None:
        """Per image (index ``image_id``, in the order of first appearance), one column per quantity, from a run's
        tables alone (a run, a merge of shards, a collected sweep); None when the run did not compute it."""
        return None

    @classmethod
    def notes(cls, tables: Mapping[str, pd.DataFrame]) -> list[str]:
        """Lines the run logs as warnings once its tables are assembled (e.g. counts of non-finite scores)."""
        return []

    @classmethod
    def headline(cls) -> Quantity | None:
        return next((q for q in cls.quantities if q.headline), None)


# --------------------------------------------------------------------------------------------- helpers

def grid_frame(per_image: Mapping[str, Any], values: Mapping[str, torch.Tensor], **axes) -> pd.DataFrame:
    """Rows of the full grid image × axis₁ × axis₂ …, in that order, with per-image columns repeated and
    each value tensor (B, len(axis₁), len(axis₂), …) flattened."""
    import numpy as np

    n = len(per_image["image_id"])
    grids = np.meshgrid(np.arange(n), *(np.arange(len(a)) for a in axes.values()), indexing="ij")
    img = grids[0].ravel()
    frame = {k: np.asarray(v, dtype=object if isinstance(v, list) else None)[img] for k, v in per_image.items()}
    for (name, axis), g in zip(axes.items(), grids[1:]):
        frame[name] = np.asarray(axis, dtype=object if isinstance(axis, list) else None)[g.ravel()]
    for name, v in values.items():
        frame[name] = v.float().cpu().numpy().ravel()
    return pd.DataFrame(frame)


def curve_auc(curves: pd.DataFrame, fraction: str) -> pd.DataFrame:
    """Per image and order, the trapezoidal area under the score curve over the fraction of pixels changed
    (column ``fraction``), from 0 to the last step's fraction (DEFINITIONS §9): Σ_k ½(f_k + f_{k+1})(a_{k+1} − a_k)."""
    import numpy as np
    from scipy.integrate import trapezoid

    wide = curves.pivot_table(index=["image_id", "order"], columns="step", values=["score_value", fraction],
                              dropna=False)  # (sorted: steps in order along the rows)
    auc = pd.Series(trapezoid(wide["score_value"].to_numpy(np.float64), wide[fraction].to_numpy(np.float64),
                              axis=1), index=wide.index)
    return auc.unstack("order").loc[curves.image_id.unique()]
