"""One look for every figure of the suite: method colours and markers, paper-size rcParams, deterministic saving.

* **Method styles** — :data:`METHOD_STYLES` fixes a colour, a marker (no two methods share one, so they differ in
  grey print too) and a display name for every method of the catalogue (DEFINITIONS §2 and beyond); a method
  keeps them in every figure. Families share hues: greys for
  the random baseline, blues for sensitivity, greens for gradient-based/deconvolution variants, reds and
  oranges for LRP-0/ε/αβ, purples for γ/composite/deep Taylor. A name not in the table gets a colour and a
  marker from :data:`FALLBACK_COLORS` / :data:`FALLBACK_MARKERS` chosen by a hash (MD5) of the name, so the
  same unknown name has the same style in every figure, run and process (two unknown names may collide).
* **rcParams** — :data:`RC_PARAMS`: 8 pt DejaVu Sans (shipped with matplotlib), thin lines, TrueType fonts
  embedded in PDF (``pdf.fonttype`` 42, as journals ask), 300 dpi PNG. Figures are sized for a paper's
  column (:data:`COLUMN_WIDTH_IN`) or full text width (:data:`TEXT_WIDTH_IN`, IEEE two-column layout).
* **Deterministic files** — :func:`save_figure` writes PDF and PNG without creation dates or software
  stamps, so the same tables give byte-identical files (with the same matplotlib and fonts).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib
from matplotlib.figure import Figure

#: IEEE two-column layout: one column and the full text width, in inches.
COLUMN_WIDTH_IN = 3.5
TEXT_WIDTH_IN = 7.16
#: Resolution of PNG files.
PNG_DPI = 300

RC_PARAMS = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "mathtext.fontset": "dejavusans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "lines.linewidth": 1.0,
    "lines.markersize": 3.5,
    "patch.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "legend.frameon": False,
    "legend.handlelength": 2.0,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "svg.hashsalt": "bench",
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "image.interpolation": "nearest",
    "text.usetex": False,
}

#: File metadata: no dates, no software version stamps (byte-identical output for identical input).
SAVE_METADATA = {"pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
                 "png": {"Software": None}}


@dataclass(frozen=True)
class MethodStyle:
    color: str
    marker: str
    display: str


#: The fixed style of every known method, in the order methods are listed in legends and tables.
METHOD_STYLES: dict[str, MethodStyle] = {
    "random": MethodStyle("#7f7f7f", "x", "Random heatmap"),
    "sensitivity": MethodStyle("#1f77b4", "o", "Sensitivity (ℓ₂)"),
    "sensitivity_linf": MethodStyle("#6baed6", "v", "Sensitivity (ℓ∞)"),
    "sensitivity_sq": MethodStyle("#08306b", "^", "Sensitivity (ℓ₂²)"),
    "gradient_x_input": MethodStyle("#17becf", "s", "Gradient × input"),
    "deconvnet": MethodStyle("#2ca02c", "D", "Deconvnet"),
    "guided_backprop": MethodStyle("#8c564b", "P", "Guided backprop"),
    "lrp_0": MethodStyle("#fb9a99", "<", "LRP-0"),
    "lrp_eps": MethodStyle("#d62728", "X", "LRP-ε"),
    "lrp_eps_0.01": MethodStyle("#e377c2", "+", "LRP-ε (ε=0.01)"),
    "lrp_eps_100": MethodStyle("#67000d", "1", "LRP-ε (ε=100)"),
    "lrp_a2b1": MethodStyle("#ff7f0e", "2", "LRP-αβ (α=2, β=1)"),
    "lrp_a1b0": MethodStyle("#fdbf6f", ">", "LRP-αβ (α=1, β=0)"),
    "lrp_gamma": MethodStyle("#9467bd", "d", "LRP-γ"),
    "deep_taylor": MethodStyle("#bcbd22", "H", "Deep Taylor"),
    "lrp_composite": MethodStyle("#54278f", "8", "LRP composite"),
    "attnlrp": MethodStyle("#f16913", "4", "AttnLRP"),
    "cp_lrp": MethodStyle("#8c6d31", "3", "CP-LRP"),
    "integrated_gradients": MethodStyle("#005a32", "p", "Integrated gradients"),
    "smoothgrad": MethodStyle("#74c476", "h", "SmoothGrad"),
    "occlusion": MethodStyle("#000000", "*", "Occlusion"),
}

#: Styles for names not in :data:`METHOD_STYLES` (none of these colours is used by a known method).
FALLBACK_COLORS = ("#a6761d", "#1b9e77", "#e7298a", "#66a61e", "#7570b3", "#d95f02", "#666666", "#b15928",
                   "#01665e", "#c51b7d", "#4d9221", "#8073ac")
FALLBACK_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*")
#: Line styles that tell apart several runs of one method in the same panel (other parameters, seeds...).
LINESTYLES = ("-", "--", (0, (5, 1, 1, 1)), "-.")
#: The random *order* (every run's baseline), drawn unlike any method — the random *heatmap* is a method
#: ("Random heatmap", grey ×): black, dotted, no markers.
RANDOM_ORDER = {"label": "random order (baseline)", "color": "black", "linestyle": ":", "linewidth": 1.3}


def set_caption(fig: Figure, text: str) -> None:
    """The caption of a figure: written beside it as ``<name>.caption.txt`` (never drawn into it)."""
    fig._bench_caption = text


def caption_of(fig: Figure) -> str:
    return getattr(fig, "_bench_caption", "")


def _digest(name: str) -> int:
    return int.from_bytes(hashlib.md5(name.encode("utf-8")).digest()[:8], "big")


def method_style(method: str) -> MethodStyle:
    """The colour, marker and display name of a method; deterministic for unknown names."""
    if method in METHOD_STYLES:
        return METHOD_STYLES[method]
    d = _digest(method)
    return MethodStyle(FALLBACK_COLORS[d % len(FALLBACK_COLORS)],
                       FALLBACK_MARKERS[(d // len(FALLBACK_COLORS)) % len(FALLBACK_MARKERS)], method)


def method_color(method: str) -> str:
    return method_style(method).color


def method_marker(method: str) -> str:
    return method_style(method).marker


def display_name(method: str) -> str:
    return method_style(method).display


DATASET_NAMES = {"mnist_embedded": "MNIST (embedded sample)", "mnist": "MNIST", "mnist_twodigit": "MNIST two digits",
                 "cifar10": "CIFAR-10", "imagenet": "ImageNet", "places365": "Places365", "sun397": "SUN397",
                 "imagefolder": "image folder", "in_memory": "images in memory"}


def dataset_name(dataset: str) -> str:
    """A dataset id as a figure shows it (unknown ids as they are)."""
    return DATASET_NAMES.get(str(dataset), str(dataset))


def method_sort_key(method: str) -> tuple[int, str]:
    """Known methods in catalogue order, then unknown ones alphabetically."""
    order = list(METHOD_STYLES)
    return (order.index(method), "") if method in METHOD_STYLES else (len(order), method)


def sort_methods(methods: Iterable[str]) -> list[str]:
    return sorted(set(methods), key=method_sort_key)


@contextlib.contextmanager
def paper() -> Iterator[None]:
    """Context in which figures are built and saved: :data:`RC_PARAMS` on top of matplotlib's defaults."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(RC_PARAMS)
        yield


def new_figure(width_in: float, height_in: float) -> Figure:
    """A pyplot-free figure (no GUI backend, no global figure registry) with constrained layout."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.04)
    return fig


def save_figure(fig: Figure, out_dir: str | Path, name: str, formats: Iterable[str] = ("pdf", "png")) -> list[Path]:
    """Write ``<out_dir>/<name>.<fmt>`` for each format, atomically and without dates or version stamps."""
    from ..run.tables import atomic_write  # (pandas) only when saving

    out_dir = Path(out_dir)
    paths = []
    with paper():
        for fmt in formats:
            path = out_dir / f"{name}.{fmt}"
            kwargs = {"format": fmt, "metadata": SAVE_METADATA.get(fmt)}
            if fmt == "png":
                kwargs["dpi"] = PNG_DPI
            atomic_write(path, lambda tmp, kw=kwargs: fig.savefig(tmp, **kw))
            paths.append(path)
    return paths
