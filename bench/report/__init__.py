"""Paper-ready report: the figures of Samek et al. (TNNLS 2017) and a summary table, from runs' tidy tables.

    python -m bench.report results/multirun/2024-05-01 [more dirs] [--out DIR]

One concept per module: :mod:`.load` (finding runs, run keys, duplicates, labels), :mod:`.aggregate`
(per-image matrices, paired differences, bootstrap bands), :mod:`.figures` (Figs. 4, 5, 6, 8 and the
curves), :mod:`.network` (Fig. 7), :mod:`.table` (summary table and paired test), :mod:`.build`
(``make_report``: all of it into a folder). Colours, markers and the paper style: :mod:`.style`. Which tables,
quantities and figures there are comes from the protocols' declarations (bench/protocols/).
"""

from .build import make_report
from .load import Results, load_results
from .network import network_quality_figure

__all__ = ["make_report", "load_results", "Results", "network_quality_figure"]
