"""Insertion (Petsiuk, Das, Saenko, BMVC 2018, "RISE"; DEFINITIONS §9): from the substrate, the heatmap's top pixels put
back.

The walk of deletion (bench/protocols/deletion.py) the other way: the curve starts at the substrate's score
(default: the image blurred by a Gaussian, the paper's kernel 11, σ 5) and ends at the image's; at step s the
top round(s·H·W/S) pixels of x are put back. High insertion AUC is good. Table ``insertion``, as deletion's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.protocols.base import AREA, Figure, Quantity, Steps, Table, substrate_settings
from bench.protocols.deletion import AREAS, Deletion


@dataclass(frozen=True)
class Insertion(Deletion):
    substrate: str = substrate_settings("blur")["substrate"]

    title = "insertion"
    inserts = True
    tables = (Table("insertion", ("image_id", "order", "step", "fraction_changed", "score_value")),)
    quantities = (
        Quantity("insertion_auc_morf", +1, "insertion AUC", AREAS, headline=True, unit=AREA,
            steps=Steps("insertion", "morf")),
        Quantity("insertion_auc_random", 0, "insertion AUC (random order)", AREAS, unit=AREA,
            steps=Steps("insertion", "random")),
        Quantity("insertion_auc_morf_minus_random", +1, "insertion AUC − random", AREAS, unit=AREA,
            steps=Steps("insertion", "morf", "random")),
    )
    figures = (Figure("deletion_insertion_curves", "fraction", x="fraction_changed",
                      panels=(("insertion", "morf", "Insertion", "pixels inserted (%)"),)),)
