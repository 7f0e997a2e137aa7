"""The metric report card's files (DEFINITIONS §10): ``per_image.parquet`` (every run), and for each card
``metric_card.csv`` (tidy: one row per quantity × criterion), ``metric_card.md`` / ``.tex`` (quantities × criteria)
and the figure ``metric_card.{pdf,png}`` (headline quantities × criteria, a column's colour from its worst to its
best value on this card) with ``metric_card.caption.txt``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..run.tables import write_csv, write_parquet, write_text
from . import style
from .card import CRITERIA, SHORT, card_quantities, card_table, cards, headlines, metric_card, per_image_table
from .load import Results, load_results
from .table import _tex_head, latex_escape

log = logging.getLogger(__name__)

READING = ("Each column is one criterion of DEFINITIONS §10 over the same images; nothing on the card is a verdict: "
           "compare the rows. Colour: from the column's worst (light) to its best (dark) value on this card, by "
           "which way the criterion is better (noise floor, reactivity and images needed: lower).")


def caption(card_rows: pd.DataFrame, condition: str) -> str:
    rows = card_rows[card_rows.condition == condition]
    notes = rows[rows.note != ""].drop_duplicates("criterion")
    missing = sorted({r.criterion for r in notes.itertuples() if not np.isfinite(r.value) and "needs" in r.note})
    text = (f"Metric report card: {condition}. {READING} Values: estimate [95% bootstrap interval over images, "
            f"computed by the card (the runs' bootstrap resamples, seeded by the first seed; DEFINITIONS §10), not "
            f"an interval of a run's summary.csv; none under 100 resamples].")
    if missing:
        text += f" Not computed (the runs lack what they need): {', '.join(missing)}."
    return text


def card_markdown(card_rows: pd.DataFrame) -> str:
    parts = []
    for condition in card_rows.condition.unique():
        rows = card_rows[card_rows.condition == condition]
        wide = card_table(rows)
        heads = ["quantity"] + list(wide.columns)
        lines = [f"**{condition}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        lines += ["| " + " | ".join([str(i)] + [str(v) for v in r]) + " |" for i, r in zip(wide.index, wide.values)]
        w = rows[rows.criterion == "kendall_w"]
        if len(w):
            r = w.iloc[0]
            ci = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" if np.isfinite(r.ci_low) and np.isfinite(r.ci_high) else "[no CI]"
            lines += ["", f"Kendall's W of the headline quantities' rankings ({r.note}): {r.value:.2f} {ci}"]
        lines += ["", caption(card_rows, condition), ""]
        lines += [f"- {SHORT[c]}: {label}" for c, (label, _) in CRITERIA.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def card_latex(card_rows: pd.DataFrame) -> str:
    out = [r"% requires \usepackage{booktabs}"]
    for k, condition in enumerate(card_rows.condition.unique()):
        wide = card_table(card_rows[card_rows.condition == condition])
        cols = list(wide.columns)
        out += [r"\begin{table*}[t]", r"\centering", r"\scriptsize",
                r"\caption{" + latex_escape(caption(card_rows, condition)) + "}",
                r"\label{tab:metric_card" + (f"_{k + 1}" if k else "") + "}", r"\setlength{\tabcolsep}{2pt}",
                r"\begin{tabular}{l" + "c" * len(cols) + "}", r"\toprule",
                "Quantity & " + " & ".join(_tex_head(c.split(" ", 1)) for c in cols) + r" \\", r"\midrule"]
        for label, values in zip(wide.index, wide.values):
            cells = []
            for v in values:
                v = "--" if v == "–" or pd.isna(v) else str(v)
                cells.append(latex_escape(v.replace("-", "−")) if v != "--" else v)
            out.append(latex_escape(label) + " & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table*}"]
    return "\n".join(out) + "\n"


def card_figure(card_rows: pd.DataFrame, condition: str, quantities: list[str]):
    """Headline quantities (rows) × criteria (columns), the value in each cell, coloured per column from worst to
    best; a column's cells without a value are blank. Width: a paper's column (3.5 in)."""
    rows = card_rows[(card_rows.condition == condition) & card_rows.quantity.isin(quantities)
                     & card_rows.criterion.isin(CRITERIA)]
    labels = [rows[rows.quantity == q].label.iloc[0] for q in quantities if (rows.quantity == q).any()]
    quantities = [q for q in quantities if (rows.quantity == q).any()]
    crit = [c for c in CRITERIA if (rows.criterion == c).any()]
    value = rows.pivot_table(index="quantity", columns="criterion", values="value", aggfunc="first", dropna=False)
    value = value.reindex(index=quantities, columns=crit)
    beyond = pd.Series(False, index=quantities)                     # images needed "> N": shaded as N + 1
    if "images_needed" in crit:
        need = rows[rows.criterion == "images_needed"].set_index("quantity")
        beyond = need.value.isna().reindex(quantities, fill_value=False)
        value.loc[beyond.to_numpy(), "images_needed"] = need.n.reindex(quantities)[beyond] + 1
    shade = np.full(value.shape, np.nan)
    for j, c in enumerate(crit):
        col = value[c].to_numpy(dtype=float) * CRITERIA[c][1]
        ok = np.isfinite(col)
        if ok.sum() >= 1:
            lo, hi = np.nanmin(col), np.nanmax(col)
            shade[ok, j] = 0.6 if hi == lo else 0.15 + 0.75 * (col[ok] - lo) / (hi - lo)
    height = 0.55 + 0.17 * len(quantities)
    fig = style.new_figure(style.COLUMN_WIDTH_IN, height)
    ax = fig.add_subplot()
    ax.imshow(np.ma.masked_invalid(shade), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(quantities)):
        for j, c in enumerate(crit):
            v = value.iloc[i, j]
            if np.isfinite(v):
                text = f"{v:.2f}".replace("-", "−")
                if c == "images_needed":
                    text = f"> {int(v) - 1}" if beyond.iloc[i] else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=4.5,
                        color="white" if shade[i, j] > 0.6 else "black")
            else:
                ax.text(j, i, "–", ha="center", va="center", fontsize=4.5, color="0.5")
    ax.set_xticks(range(len(crit)), [SHORT[c] for c in crit], rotation=45, ha="left", fontsize=5)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(quantities)), labels, fontsize=5)
    ax.tick_params(length=0, pad=1)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    style.set_caption(fig, caption(card_rows, condition))
    return fig


def write_card(results: Results, out: Path, formats=("pdf", "png"),
               frames: dict[str, pd.DataFrame] | None = None) -> dict[str, list[Path]]:
    """``per_image.parquet`` and, when the runs make a card, the card's files (module docstring); ``frames``, when
    given, gets ``metric_card``: the rows metric_card.csv was written from."""
    written: dict[str, list[Path]] = {}
    per_image = per_image_table(results)
    if per_image.empty:
        return written
    write_parquet(per_image, out / "per_image.parquet")
    written["per_image"] = [out / "per_image.parquet"]
    found = cards(per_image, results)
    if not found:
        return written
    rows = metric_card(per_image, results)
    if frames is not None:
        frames["metric_card"] = rows
    write_csv(rows, out / "metric_card.csv")
    write_text(card_markdown(rows), out / "metric_card.md")
    write_text(card_latex(rows), out / "metric_card.tex")
    written["metric_card"] = [out / f"metric_card.{ext}" for ext in ("csv", "md", "tex")]
    for k, card in enumerate(found):
        name = "metric_card" + (f"_{k + 1}" if k else "")
        heads = headlines(card) or card_quantities(card)
        fig = card_figure(rows, card.condition, heads)
        files = style.save_figure(fig, out, name, formats)
        write_text(style.caption_of(fig) + "\n", out / f"{name}.caption.txt")
        written[f"{name}_figure"] = files + [out / f"{name}.caption.txt"]
    return written



def print_card(collection) -> None:
    """After the metric card's sweep (conf/experiment/metric_card.yaml: ``hydra.callbacks.collect.then``): the
    card's headline quantities × criteria on stdout, and the command that writes the whole card."""
    if collection is None or collection.summary is None or collection.out is None:
        return
    try:
        results = load_results([collection.out], show_progress=False)
        per_image = per_image_table(results)
        rows = metric_card(per_image, results)
        found = cards(per_image, results)
    except Exception as exc:  # the card must never hide the sweep's own outcome
        log.warning("the metric card of %s failed (%s: %s); run: python -m bench.report %s", collection.out,
                    type(exc).__name__, exc, collection.out)
        return
    for card in found:
        table = card_table(rows[rows.condition == card.condition], headlines(card), ci=False)
        print(f"\nmetric report card (DEFINITIONS §10): {card.condition}\n{table.to_string()}")
    print(f"the whole card (every quantity, 95% intervals, csv/md/tex, the figure): python -m bench.report "
          f"{collection.out}")
