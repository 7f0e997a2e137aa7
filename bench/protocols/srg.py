"""Symmetric relevance gain (Blücher, Vielhaben, Strodthoff 2024; DEFINITIONS §9), from the AOPC curves of the run.

Per image, SRG = AUC(LeRF) − AUC(MoRF) of the score curves over the fraction of pixels perturbed (trapezoids,
DEFINITIONS §9), and its AOPC form ``srg_aopc`` = AOPC_MoRF(L) − AOPC_LeRF(L). High: the heatmap separates what the
model relies on from what it does not, whatever the replacement does to the image. No forward pass of its own:
it reads the ``curves`` table, which needs the LeRF order (``orders=[morf,lerf,random]``); a run with LeRF
reports it whether or not ``metrics`` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.protocols.aopc import final_aopc
from bench.protocols.base import AREA, Protocol, Quantity, Steps, curve_auc


@dataclass(frozen=True)
class SRG(Protocol):
    title = "SRG"
    orders = ("lerf",)
    quantities = (
        Quantity("srg", +1, "SRG AUC(LeRF) − AUC(MoRF)",
                 "per image (trapezoidal areas over the fractions of pixels changed)", headline=True, unit=AREA,
                     steps=Steps("curves", "lerf", "morf")),
        Quantity("srg_aopc", +1, "SRG AOPC(MoRF) − AOPC(LeRF)", "at the last step L",
            steps=Steps("curves", "lerf", "morf")),
    )

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        curves = tables.get("curves")
        if curves is None or not {"morf", "lerf"} <= set(curves.order):
            return None
        final = final_aopc(curves)
        auc = curve_auc(curves, "fraction_perturbed")
        return pd.DataFrame({"srg": auc["lerf"] - auc["morf"], "srg_aopc": final["morf"] - final["lerf"]},
                            index=final.index)
