"""The metric report card (DEFINITIONS §10): how far each quantity's ranking of the methods can be trusted.

:func:`per_image_table` — every run's per-image quantities, tidy (the run's identity, ``image_id``, ``quantity``,
``value``, ``direction``), the table the card is computed from (``per_image.parquet``).

:func:`metric_card` — one row per quantity × criterion (``value``, the 95% percentile bootstrap interval over
images where the criterion has one, ``n`` images, ``note`` when it could not be computed), for each *card*: the
runs of one condition but for ``seed``, ``randomise_layers`` and ``input_noise`` (experiment=metric_card makes
them), with ≥ 3 methods, ``random`` among them. The reference run of a method is its run at the smallest seed,
unrandomised and without noise. The statistics are in bench/report/card_stats.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import protocols
from ..run.card_sweep import clean_runs, reference_runs
from ..run.summary import stand_in
from ..run.tables import COLUMN_KEY
from . import card_stats as cs
from .load import Results

#: Criterion → (label, which way is better: +1 higher, −1 lower, 0 neither), in the card's column order.
CRITERIA = {
    "noise_floor": ("seed noise floor (SD across seeds ÷ SD across methods)", -1),
    "rank_stability": ("rank stability across seeds (mean τ_b)", +1),
    "discriminative_power": ("share of methods above random (95% CI > 0)", +1),
    "win_rate": ("median share of images a method beats random", +1),
    "reliability": ("inter-image reliability (Krippendorff's α, ordinal)", +1),
    "agreement": ("agreement with the other headline quantities (mean τ_b)", +1),
    "reactivity": ("reactivity to model randomisation (Spearman ρ of k and score)", -1),
    "gap_closed": ("share of the gap to random closed at the last k", +1),
    "resilience": ("resilience to minor input noise (τ_b clean vs noisy)", +1),
    "images_needed": ("images needed for a stable ranking (≥ 95% of subsamples)", -1),
    "consistency": ("internal consistency across curve steps (Cronbach's α)", +1),
}
#: Short heads of the criteria (tables and the figure).
SHORT = {"noise_floor": "noise floor", "rank_stability": "seed τ", "discriminative_power": "disc. power",
         "win_rate": "win rate", "reliability": "Kripp. α", "agreement": "agreement", "reactivity": "reactivity",
         "gap_closed": "gap closed", "resilience": "resilience", "images_needed": "images", "consistency": "Cronb. α"}
#: The subsample sizes of "images needed" (DEFINITIONS §10): 10, 20, 50, 100, 200, 500, 1000, … up to the images run.
def size_grid(n: int) -> list[int]:
    out, base = [], 1
    while True:
        for m in (10, 20, 50):
            if m * base > n:
                return out
            out.append(m * base)
        base *= 10


VARIANT = ["seed", "randomise_layers", "input_noise"]
CARD_KEY = [c for c in COLUMN_KEY if c not in VARIANT]
IDENTITY = ["run", "run_key", "method", "method_params", "pooling", *CARD_KEY, *VARIANT, "equal_regions"]
STABLE = 0.95


def _nanmean(x, axis=-1):
    """The mean over ``axis`` leaving NaN out; NaN (no warning) where all are NaN."""
    x = np.asarray(x, dtype=float)
    n = np.isfinite(x).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.nansum(x, axis) / np.where(n > 0, n, 1), np.nan)


# ------------------------------------------------------------------------------------------ per-image table

def per_image_table(results: Results) -> pd.DataFrame:
    """Every run's per-image quantities, tidy: IDENTITY + ``image_id``, ``target_class`` (the explained class),
    ``quantity``, ``value``, ``direction`` (+1 higher is better, −1 lower, 0 not a comparison of methods)."""
    declared = protocols.quantities()
    frames = []
    for row in results.runs.itertuples(index=False):
        q = results.run_quantities(row.run)
        if q is None or q.empty:
            continue
        curves = results.run_table(row.run)
        target = curves.drop_duplicates("image_id").set_index("image_id")["target_class"]
        long = q.rename_axis("image_id").reset_index().melt(id_vars="image_id", var_name="quantity",
                                                               value_name="value")
        long["target_class"] = long.image_id.map(target).astype("Int64")
        long["direction"] = long.quantity.map(lambda n: declared[n][1].direction if n in declared else 0)
        first = curves.iloc[0]
        for c in IDENTITY:
            long[c] = row.run if c == "run" else first.get(c, "")
        frames.append(long)
    cols = IDENTITY + ["image_id", "target_class", "quantity", "value", "direction"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


# ------------------------------------------------------------------------------------------ the card

@dataclass
class Card:
    """The runs of one card: the reference (first-seed) runs, the seeds' runs, the randomised and the noisy runs."""

    condition: str
    methods: list[str]
    seeds: list[int]
    layers: list[int]
    noise: float | None
    per_image: pd.DataFrame      # rows of this card's runs only
    steps: dict                  # (method, quantity) → (n images × L) per-step values of the reference run


def cards(per_image: pd.DataFrame, results: Results | None = None) -> list[Card]:
    """The cards the runs make (module docstring); conditions with fewer than 3 methods or none random are not
    cards."""
    out = []
    if per_image.empty:
        return out
    for _, rows in per_image.groupby([c for c in CARD_KEY if c in per_image], sort=False, dropna=False):
        clean = clean_runs(rows)
        methods = sorted(clean.method.unique(), key=lambda m: (m != "random", m))
        if len(methods) < 3 or "random" not in methods:
            continue
        seeds = sorted(int(s) for s in clean.seed.unique())
        s0 = seeds[0]
        layers = sorted(int(k) for k in rows[(rows.seed == s0) & (rows.randomise_layers > 0)].randomise_layers.unique())
        noisy = rows[(rows.seed == s0) & (rows.randomise_layers == 0) & (rows.input_noise > 0)]
        noise = float(noisy.input_noise.iloc[0]) if len(noisy) else None
        first = rows.iloc[0]
        condition = (f"{first.dataset} · {first.model} · {first.regions} patch {first.patch} · "
                     f"{first.perturbation} · {first.images} images · {len(methods)} methods")
        steps = _steps(results, reference_runs(rows)) if results is not None else {}
        out.append(Card(condition, methods, seeds, layers, noise, rows, steps))
    return out


def _steps(results: Results, reference: pd.DataFrame) -> dict:
    """(method, quantity) → DataFrame image_id × step of the per-step values of each quantity declaring ``steps``,
    from the reference runs' tables."""
    declared = protocols.quantities()
    out = {}
    for run, rows in reference.groupby("run", sort=False):
        method = rows.method.iloc[0]
        for name in rows.quantity.unique():
            steps = declared[name][1].steps if name in declared else None
            table = results.run_table(run, steps.table) if steps is not None else None
            if table is None or table.empty:
                continue
            out[(method, name)] = step_items(table, steps)
    return out


def step_items(table: pd.DataFrame, steps: "protocols.base.Steps") -> pd.DataFrame:
    """image_id × step (≥ 1) of a quantity's per-step values (``Steps``); a step some image lacks is dropped."""
    wide = table.pivot_table(index=["image_id", "step"], columns="order", values=steps.value, aggfunc="mean")
    v = wide[steps.order] - (wide[steps.minus] if steps.minus else 0.0)
    if steps.from_start and not steps.minus:
        v = v.groupby(level="image_id").transform("first") - v   # f(x⁰) − f(xᵏ)
    elif steps.from_start:
        v = -v
    v = v[v.index.get_level_values("step") > 0].unstack("step")
    return v.dropna(axis=1)


def card_quantities(card: Card) -> list[str]:
    """The quantities on the card: those with a direction, not diagnostics, in the order of the runs' columns."""
    declared = protocols.quantities()
    first = card.per_image.iloc[0]
    names = [q for q in card.per_image.quantity.unique() if q in declared]
    return [q for q in names if declared[q][1].direction and not declared[q][1].diagnostic
            and (declared[q][1].when is None or declared[q][1].when(first))]


def headlines(card: Card) -> list[str]:
    """One quantity per protocol (its headline; the area-matched stand-in when the card's regions are unequal)."""
    declared, first = protocols.quantities(), card.per_image.iloc[0]
    return [stand_in(q, first) for q in card_quantities(card) if declared[q][1].headline]


class _Values:
    """The card's oriented per-image values, pivoted once: ``(quantity, seed, k, σ, methods)`` → M × n."""

    def __init__(self, rows: pd.DataFrame, images: pd.Index) -> None:
        rows = rows.assign(value=rows.value.astype(float) * rows.direction)
        self.wide = rows.pivot_table(index=["quantity", "seed", "randomise_layers", "input_noise", "method"],
                                     columns="image_id", values="value", aggfunc="first").reindex(columns=images)

    def __call__(self, quantity: str, seed: int, k: int, sigma: float, methods: list[str]) -> np.ndarray:
        index = pd.MultiIndex.from_tuples([(quantity, seed, k, sigma, m) for m in methods])
        return self.wide.reindex(index=index).to_numpy(dtype=float)


def metric_card(per_image: pd.DataFrame, results: Results | None = None, resamples: int | None = None,
                seed: int | None = None) -> pd.DataFrame:
    """The card's rows (module docstring): ``condition``, ``quantity``, ``label``, ``protocol``, ``direction``,
    ``criterion``, ``value``, ``ci_low``, ``ci_high``, ``n``, ``note``. ``resamples``, ``seed``: of the bootstrap
    (None: the runs' ``bootstrap`` and the reference seed)."""
    rows = []
    for card in cards(per_image, results):
        rows += _card_rows(card, int(card.per_image.bootstrap.iloc[0]) if resamples is None else resamples,
                           card.seeds[0] if seed is None else seed)
    return pd.DataFrame(rows, columns=["condition", "quantity", "label", "protocol", "direction", "criterion",
                                       "value", "ci_low", "ci_high", "n", "note"])


def _card_rows(card: Card, resamples: int, seed: int) -> list[dict]:
    declared = protocols.quantities()
    pi = card.per_image
    s0 = card.seeds[0]
    ref = reference_runs(pi)
    names, heads = card_quantities(card), headlines(card)
    out = []

    def row(q, criterion, values, n, note="", ci=True):
        values = np.atleast_1d(np.asarray(values, dtype=float))
        lo, hi = cs.percentile_ci(values[1:]) if ci and len(values) > 1 else (float("nan"), float("nan"))
        cls, decl = declared.get(q, (None, None))
        out.append(dict(condition=card.condition, quantity=q, label=decl.label if decl else q,
                        protocol=cls.name if cls else "", direction=decl.direction if decl else 0,
                        criterion=criterion, value=float(values[0]), ci_low=lo, ci_high=hi, n=int(n), note=note))

    # the images every reference run has a finite value of every quantity for
    finite = ref[np.isfinite(ref.value.astype(float))]
    per_method = finite.groupby("method").image_id.unique()
    images = pd.Index(sorted(set.intersection(*(set(v) for v in per_method)))) if len(per_method) else pd.Index([])
    w = cs.weights(len(images), resamples, seed)
    values = _Values(pi, images)
    ref_means, noisy_keep = {}, None
    if card.noise is not None:
        noisy = pi[(pi.seed == s0) & (pi.randomise_layers == 0) & (pi.input_noise == card.noise)]
        cls_clean = ref.drop_duplicates("image_id").set_index("image_id").target_class
        cls_noisy = noisy.drop_duplicates("image_id").set_index("image_id").target_class
        noisy_keep = np.asarray([i in cls_noisy.index and cls_noisy[i] == cls_clean.get(i) for i in images])

    for q in names:
        v = values(q, s0, 0, 0.0, card.methods)                             # M × n
        has = np.isfinite(v).any(1)                                         # the methods whose runs have q
        methods = [m for m, h in zip(card.methods, has) if h]
        real = [m for m in methods if m != "random"]
        v = v[has]
        keep = np.isfinite(v).all(0)
        if len(methods) < 3 or "random" not in methods or keep.sum() < 2:
            for c in CRITERIA:
                row(q, c, np.nan, int(keep.sum()), f"fewer than 3 methods with random, or 2 images, have {q}")
            continue
        if not keep.all():
            v = v[:, keep]
        wq, n = w[:, keep], int(keep.sum())
        means = cs.wmean(v, wq)                                             # R × M
        ranks = cs.ranking(means)
        ref_means[q] = (tuple(methods), ranks)
        # seeds
        if len(card.seeds) >= 2:
            by_seed = np.stack([values(q, s, 0, 0.0, methods)[:, keep] for s in card.seeds])   # S × M × n
            if np.isfinite(by_seed).all():
                m_s = cs.wmean(by_seed, wq)                                 # R × S × M
                spread = m_s.std(1, ddof=1).mean(-1)
                between = m_s.mean(1).std(-1, ddof=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    floor = np.where(spread == 0, 0.0, spread / between)
                row(q, "noise_floor", floor, n)
                r_s = cs.ranking(m_s)
                pairs = list(itertools.combinations(range(len(card.seeds)), 2))
                row(q, "rank_stability", _nanmean([cs.tau_b(r_s[:, a], r_s[:, b]) for a, b in pairs], 0), n)
            else:
                row(q, "noise_floor", np.nan, n, "a seed's run lacks values for some images")
                row(q, "rank_stability", np.nan, n, "a seed's run lacks values for some images")
        else:
            for c in ("noise_floor", "rank_stability"):
                row(q, c, np.nan, n, "needs runs at ≥ 2 seeds (experiment=metric_card)")
        # against the random heatmap
        delta = v[1:] - v[:1]                                               # (M−1) × n, random first
        d_means = cs.wmean(delta, wq)                                       # R × (M−1)
        lows = np.array([cs.percentile_ci(d_means[1:, j])[0] for j in range(len(real))])
        row(q, "discriminative_power", [float(np.mean(lows > 0))], n, ci=False)
        wins = cs.wmean((delta > 0).astype(float), wq)
        row(q, "win_rate", np.median(wins, -1), n)
        # images as raters
        img_ranks = cs.ranking(v.T)                                         # n × M
        row(q, "reliability", cs.krippendorff_ordinal(img_ranks, wq), n)
        # randomised models
        if card.layers:
            ks = [0] + card.layers
            mats = [v[1:]] + [values(q, s0, k, 0.0, real)[:, keep] for k in card.layers]
            stack = np.stack(mats)                                          # (K+1) × (M−1) × n
            if np.isfinite(stack).all():
                m_k = cs.wmean(stack, wq)                                   # R × (K+1) × (M−1)
                rho = cs.spearman(np.asarray(ks, float), np.moveaxis(m_k, 1, -1))   # R × (M−1)
                row(q, "reactivity", _nanmean(rho, -1), n)
                rnd = means[:, :1]
                den = m_k[:, 0] - rnd
                with np.errstate(invalid="ignore", divide="ignore"):
                    gap = np.where(np.abs(den) < 1e-9, np.nan, (m_k[:, 0] - m_k[:, -1]) / den)
                row(q, "gap_closed", _nanmean(gap, -1) if np.isfinite(gap).any() else np.nan, n,
                    "" if np.isfinite(gap[0]).any() else "the methods do not differ from random (denominator < 1e-9)")
            else:
                for c in ("reactivity", "gap_closed"):
                    row(q, c, np.nan, n, "a randomised run lacks values for some images")
        else:
            for c in ("reactivity", "gap_closed"):
                row(q, c, np.nan, n, "needs runs with randomise_layers > 0 (experiment=metric_card)")
        # noisy inputs
        if card.noise is not None:
            nk = noisy_keep[keep]
            noisy_v = values(q, s0, 0, card.noise, methods)[:, keep][:, nk]
            if nk.sum() >= 2 and np.isfinite(noisy_v).all():
                wn = wq[:, nk]
                row(q, "resilience", cs.tau_b(cs.ranking(cs.wmean(v[:, nk], wn)), cs.ranking(cs.wmean(noisy_v, wn))),
                    int(nk.sum()), f"σ = {card.noise:g}; {int((~nk).sum())} image(s) whose class changed left out")
            else:
                row(q, "resilience", np.nan, int(nk.sum()), f"σ = {card.noise:g}: too few images keep their class, "
                    f"or the noisy run lacks values")
        else:
            row(q, "resilience", np.nan, n, "needs a run with input_noise > 0 (experiment=metric_card)")
        # images needed
        _images_needed(q, v, ranks[0], resamples, seed, row)
        # curve steps
        alphas = []
        for m in real:
            items = card.steps.get((m, q))
            if items is None:
                continue
            x = items.reindex(images[keep]).to_numpy(dtype=float)
            if np.isfinite(x).all():
                alphas.append(cs.cronbach(x, wq))
        if alphas:
            row(q, "consistency", _nanmean(np.stack(alphas), 0), n)
        else:
            steps = declared[q][1].steps
            row(q, "consistency", np.nan, n, "not read from a curve with the same steps for every image"
                if steps is None else "the curves' tables are not in the results")
    # agreement with the other headline quantities, and Kendall's W of the headlines
    for q in (q for q in names if q in ref_means):  # against the headlines ranking the same methods
        others = [r for r in heads if r != q and r in ref_means and ref_means[r][0] == ref_means[q][0]]
        if not others:
            row(q, "agreement", np.nan, len(images), "needs a second protocol run by the same methods")
            continue
        row(q, "agreement", _nanmean([cs.tau_b(ref_means[q][1], ref_means[r][1]) for r in others], 0),
            len(images), f"against {', '.join(others)}")
    usable = [h for h in heads if h in ref_means and ref_means[h][0] == tuple(card.methods)]
    if len(usable) >= 2:
        stacked = np.stack([ref_means[h][1] for h in usable], 1)             # R × m × M
        row("(headline quantities)", "kendall_w", cs.kendall_w(stacked), len(images), ", ".join(usable))
    return out


def _images_needed(q: str, v: np.ndarray, full: np.ndarray, resamples: int, seed: int, row) -> None:
    """stability_q(n) on the size grid and images_needed_q (DEFINITIONS §10), from ``resamples`` subsamples each."""
    n_all = v.shape[1]
    rng = np.random.default_rng([seed, 10])
    needed = None
    for size in size_grid(n_all):
        idx = rng.integers(0, n_all, size=(resamples, size))
        means = v[:, idx].mean(-1).T                                        # resamples × M
        stable = float(np.mean((cs.ranking(means) == full[None]).all(-1)))
        row(q, f"stability_at_{size}", [stable], size, ci=False)
        if needed is None and stable >= STABLE:
            needed = size
    if needed is None:
        row(q, "images_needed", [np.nan], n_all, f"> {n_all}: no subsample size reaches {STABLE:.0%}", ci=False)
    else:
        row(q, "images_needed", [needed], n_all, ci=False)


# ------------------------------------------------------------------------------------------ writing

def card_table(card_rows: pd.DataFrame, quantities: list[str] | None = None, ci: bool = True) -> pd.DataFrame:
    """quantities × criteria of the card's values ("value [ci_low, ci_high]", or the value alone without ``ci``;
    images_needed as "> N" when no size reaches it)."""
    main = card_rows[card_rows.criterion.isin(CRITERIA)]
    if quantities is not None:
        main = main[main.quantity.isin(quantities)]

    def cell(r):
        if not np.isfinite(r.value):
            return f"> {r.n}" if r.criterion == "images_needed" and r.note.startswith(">") else "–"
        if r.criterion == "images_needed":
            return f"{int(r.value)}"
        text = f"{r.value:.2f}"
        return text + (f" [{r.ci_low:.2f}, {r.ci_high:.2f}]" if ci and np.isfinite(r.ci_low) else "")

    main = main.assign(cell=main.apply(cell, axis=1))
    wide = main.pivot_table(index="label", columns="criterion", values="cell", aggfunc="first", sort=False)
    return wide[[c for c in CRITERIA if c in wide.columns]].rename(columns=SHORT)

