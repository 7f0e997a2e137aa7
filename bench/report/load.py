"""Finding and reading runs' tables for a report; one key per run; line labels.

**Which tables** — below the given folders (recursively, sorted, hidden folders skipped):

* a folder written by ``python -m bench.collect`` (it holds ``collection.json``) is read, and the job folders
  below the root it collected are not: the collection already holds their rows — finished runs only, shards
  merged, duplicates dropped. If a job there finished after the collection, a warning says to collect again;
* any other folder with a ``curves.parquet`` is a run folder and is read — unless it is a resumable job
  (``job.json``) without its ``DONE`` marker (unfinished or killed: its tables may be stale), or holds
  ``FAILED``; those are left out with a warning. (A sharded run's rows exist only after collecting.)

A *run* is one condition (the :data:`CONDITION` columns of the provenance, plus the wall time, which tells
apart two runs of one condition in a merged table) within one file. Its key ``run`` is the folder relative
to the common parent of the given folders, with ``/<method>,<what varies>=<value>`` (and ``#2``…) appended
when one file holds several runs (e.g. ``collected/lrp_eps,patch=7``). Next to each ``curves.parquet``
the report also reads, when present:

* every table a protocol declares (bench/protocols/<name>.py, ``tables``), ``<table>.parquet``, with the columns
  it declares: rows given to the run of the same condition in that folder. A table whose rows depend on the
  heatmaps only (``per_heatmap``: complexity, continuity) may lack the provenance when its folder holds one run
  (it is taken from that run; ``image`` is read as ``image_id``), and of runs that share heatmaps the first
  run's rows are kept;
* ``heatmaps.parquet`` — ``image_id``, ``height``, ``width``, ``heatmap`` (flat row-major array) + provenance,
  as runs write it; or ``heatmaps.npz`` — one H×W array per key, the key being the image id;

and anywhere below the folders ``network_quality.parquet`` / ``network_quality.csv`` (TNNLS Fig. 7).

**Older tables** — tables written before a provenance column existed get it with the value they meant
(:data:`BACKFILL`): constants, or what the run's own tables tell (its number of images, its protocols, whether
its regions have one size), so results collected by an earlier version still load and are kept apart from
runs of another condition.

**Duplicates** — two runs with the same condition (same method, parameters, dataset, model, patch, seed,
…; device, versions and wall time do not count). ``duplicates="keep"`` (default) keeps both, tells them
apart by run key in labels, and warns; ``"last"`` keeps only the last in sorted path order (for Hydra's
date/time folders: the most recent) and warns about the dropped ones; ``"error"`` refuses.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..errors import BenchError
from .. import protocols
from ..run import jobdir
from ..run.summary import mixed_columns
from ..run.tables import CONDITION, HEATMAP_KEY, name_clashes, protocol_of_table
from ..run.progress import progress
from .style import display_name, method_sort_key

log = logging.getLogger(__name__)

#: Columns added to the provenance later, with the value every older table meant: a constant, or ``recovered``
#: (:func:`backfill`) from the older run's own tables where they tell it — ``images``: the number of distinct
#: image ids of the run's curves; ``metrics``: the protocols of the run's rows in its folder's ``summary.csv``
#: (else: the anchor and every protocol with a table holding rows of the run), in catalogue order;
#: ``equal_regions``: tiles whose every step perturbs ``step / n_regions`` of the pixels (equal tiles), else
#: (no ``fraction_perturbed``) whether ``patch`` divides the dataset's image side (28 for MNIST, 32 for CIFAR,
#: 224 otherwise); superpixels: false. ``bootstrap``: 1000, the only default the suite had. What no older table
#: holds (digests, device model, versions, run key) is "" and ``protocol_settings`` "{}" (each protocol's declared
#: defaults then apply, e.g. to a quantity's unit: ``protocols.unit``).
BACKFILL = {"regions": "tiles", "regions_params": '{"score": "sum"}', "run_key": "", "model_sha": "", "data_sha": "",
            "bootstrap": 1000, "protocol_settings": "{}", "protocol_params": "{}", "code_sha": "", "device_name": "",
            "scipy_version": "", "skimage_version": "", "pandas_version": "", "randomise_layers": 0, "input_noise": 0.0,
            "protocol": "recovered", "images": "recovered", "metrics": "recovered", "equal_regions": "recovered"}
#: The condition of an older run as its tables tell it: :data:`CONDITION` without what :func:`backfill` recovers.
OLDER_KEY = [c for c in CONDITION if c not in ("images", "metrics")]
#: Image side of the datasets whose images have one (``equal_regions`` of an older run without fractions).
IMAGE_SIDE = {"mnist": 28, "mnist_embedded": 28, "mnist_twodigit": 28, "cifar10": 32}
DUPLICATE_POLICIES = ("keep", "last", "error")


@dataclass
class Results:
    """All tables of a report. ``runs``: one row per run (``run``, ``dir``, CONDITION, ``preprocessing`` and
    ``model_params`` where recorded, ``L``, ``n_images``, ``duplicate``); ``curves``: the rows of the table every run
    writes (the required protocol's, ``protocols.anchor()``);
    ``tables``: every other table a protocol declares (bench/protocols/), by name. All carry a ``run`` column."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    heatmaps: pd.DataFrame | None = None  # run, image_id, heatmap (H×W), image (H×W×C in [0, 1] or None) + HEATMAP_KEY
    network: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _by_run: dict | None = field(default=None, repr=False, compare=False)
    _table_by_run: dict = field(default_factory=dict, repr=False, compare=False)
    _quantities: dict = field(default_factory=dict, repr=False, compare=False)

    def table(self, name: str) -> pd.DataFrame | None:
        """The rows of table ``name`` of every run (the anchor's too); None when no run has it."""
        return self.curves if name == protocols.anchor() else self.tables.get(name)

    def run_table(self, run: str, name: str | None = None) -> pd.DataFrame | None:
        """The rows of one run in table ``name`` (default: the anchor, the curves; split once, then looked up);
        None when the run has no such table (the anchor: no rows)."""
        if name is None or name == protocols.anchor():
            if self._by_run is None:
                self._by_run = {k: g for k, g in self.curves.groupby("run", sort=False)}
            return self._by_run.get(run, self.curves.iloc[:0])
        if name not in self.tables:
            return None
        if name not in self._table_by_run:
            self._table_by_run[name] = {k: g for k, g in self.tables[name].groupby("run", sort=False)}
        return self._table_by_run[name].get(run)

    def run_tables(self, run: str) -> dict[str, pd.DataFrame]:
        """Every table of one run, as its summary reads them (bench/run/summary.py)."""
        out = {protocols.anchor(): self.run_table(run)}
        for name in self.tables:
            t = self.run_table(run, name)
            if t is not None:
                out[name] = t
        return out

    def run_quantities(self, run: str) -> pd.DataFrame | None:
        """One run's per-image quantities, exactly as its summary computes them
        (``bench.run.summary.per_image_quantities`` of :meth:`run_tables`), computed once; None without curves."""
        if run not in self._quantities:
            from ..run.summary import per_image_quantities

            tables = self.run_tables(run)
            self._quantities[run] = None if tables[protocols.anchor()].empty else per_image_quantities(tables)
        return self._quantities[run]


def _warn(warnings: list[str], message: str) -> None:
    warnings.append(message)
    log.warning("%s", message)


def _key(path: Path, base: Path) -> str:
    rel = os.path.relpath(path, base)
    return path.name if rel == "." else rel.replace(os.sep, "/")


def _roots(dirs) -> tuple[list[Path], Path]:
    """The given folders (a file stands for its folder) and their common parent, the base of run keys."""
    roots = [Path(d).resolve() for d in ([dirs] if isinstance(dirs, (str, Path)) else dirs)]
    missing = [str(r) for r in roots if not r.exists()]
    if missing or not roots:
        raise BenchError(f"no such folder: {', '.join(missing) or '(none given)'}")
    roots = [r.parent if r.is_file() else r for r in roots]
    return roots, Path(os.path.commonpath(roots))


def find_files(roots: list[Path], name: str) -> list[Path]:
    found = set()
    for root in roots:
        found.update(p for p in root.rglob(name) if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(root).parts))
    return sorted(found)


COLLECTION = "collection.json"   # the marker of bench/run/collect.py's output; job folders: bench/run/jobdir.py


def table_folders(roots: list[Path], warnings: list[str]) -> list[Path]:
    """The folders whose curves.parquet to read (see the module docstring), sorted."""
    anchor = f"{protocols.anchor()}.parquet"
    collections = {p.parent for p in find_files(roots, COLLECTION) if (p.parent / anchor).is_file()}
    covered = {}
    for c in collections:
        try:
            root = Path(json.loads((c / COLLECTION).read_text())["root"]).resolve()
        except (OSError, ValueError, KeyError, TypeError):
            root = c.parent
        covered[c] = root
    folders, stale, skipped = [], [], []
    for d in sorted({p.parent for p in find_files(roots, anchor)}):
        if d in collections:
            folders.append(d)
            continue
        under = [c for c, root in covered.items() if root == d or root in d.parents]
        if under:
            done = d / jobdir.DONE
            if done.is_file() and any(done.stat().st_mtime > (c / COLLECTION).stat().st_mtime for c in under):
                stale.append(d)
            continue
        if jobdir.status(d).status in ("failed", "incomplete"):
            skipped.append(d)
            continue
        folders.append(d)
    if stale:
        _warn(warnings, f"{len(stale)} job(s) finished after their collection was made, e.g. {stale[0]}; "
                        f"run python -m bench.collect again to include them")
    if skipped:
        _warn(warnings, f"left out {len(skipped)} unfinished or failed job folder(s): "
                        + ", ".join(map(str, skipped[:5])) + (" …" if len(skipped) > 5 else ""))
    return folders


def _split_runs(df: pd.DataFrame, key: str) -> list[tuple[str, pd.DataFrame]]:
    """The runs of one curve table: one per condition (and wall time, in merged tables)."""
    cols = CONDITION + [c for c in ("wall_time_s",) if c in df.columns]
    groups = [g for _, g in df.groupby(cols, sort=False, dropna=False)]
    if len(groups) == 1:
        return [(key, df)]
    varying = [c for c in CONDITION if c not in ("method", "method_params") and df[c].astype(str).nunique() > 1]
    out, seen = [], {}
    for g in groups:
        name = f"{key}/{g.method.iloc[0]}" + "".join(f",{c}={g[c].iloc[0]}" for c in varying)
        seen[name] = seen.get(name, 0) + 1
        out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", g))
    return out


def _condition_tuple(row) -> tuple:
    return tuple(str(row[c]) for c in CONDITION)


def _key_strings(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    """Per row, the values of ``cols`` as one string (vectorised)."""
    out = pd.Series("", index=df.index, dtype=object)
    for i, c in enumerate(cols):
        out = out + ("\x1f" if i else "") + df[c].astype(str).astype(object)
    return out


@dataclass
class Older:
    """What an older run's tables tell about the provenance they lack, per :data:`OLDER_KEY` (joined strings):
    ``images`` and ``equal_regions`` from the curves, ``metrics`` from the folder's summary.csv or tables."""

    images: dict[str, int] = field(default_factory=dict)
    equal_regions: dict[str, bool] = field(default_factory=dict)
    metrics: dict[str, str] = field(default_factory=dict)


def _equal_regions(df: pd.DataFrame) -> pd.Series:
    """Per row of an older curve table: whether its run's regions are of one size (see :data:`BACKFILL`)."""
    tiles = df["regions"].astype(str) == "tiles"
    if "fraction_perturbed" in df.columns and "n_regions" in df.columns:
        n = pd.to_numeric(df["n_regions"], errors="coerce").to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = np.abs(df["fraction_perturbed"].to_numpy(np.float64) - df["step"].to_numpy(np.float64) / n)
        off = pd.Series(~(dev <= 1e-5), index=df.index).groupby(_key_strings(df, OLDER_KEY)).transform("any")
        return tiles & ~off
    side = df["dataset"].astype(str).map(lambda d: IMAGE_SIDE.get(d, 224))
    return tiles & (side % pd.to_numeric(df["patch"], errors="coerce").fillna(1).astype(int) == 0)


def _older(folder: Path, curves: pd.DataFrame) -> Older:
    """:class:`Older` of one folder, from its (constant-backfilled) curves and the other tables there."""
    key = _key_strings(curves, OLDER_KEY)
    older = Older(images=curves.groupby(key, sort=False)["image_id"].nunique().to_dict(),
                  equal_regions=_equal_regions(curves).groupby(key, sort=False).first().to_dict())
    anchor = protocols.anchor()
    anchor_protocol = protocol_of_table(anchor) or anchor
    found: dict[str, set[str]] = {k: {anchor_protocol} for k in older.images}
    declared = protocols.quantities()
    summary = folder / "summary.csv"
    done = False
    if summary.is_file():
        s = pd.read_csv(summary, dtype=str, keep_default_na=False)
        if "quantity" in s.columns and all(c in s.columns or c in BACKFILL for c in OLDER_KEY):
            s = _constants(s)
            for k, q in zip(_key_strings(s, OLDER_KEY), s["quantity"]):
                if q in declared and k in found:
                    found[k].add(declared[q][0].name)
            done = True
    if not done:
        for name in declared_tables():
            path = folder / f"{name}.parquet"
            if name == anchor or not path.is_file():
                continue
            protocol = protocol_of_table(name)
            columns = set(pq.read_schema(path).names)
            if not {c for c in OLDER_KEY if c not in BACKFILL} <= columns:
                for protocols_of_run in found.values():  # a per-heatmap table without provenance: of
                    protocols_of_run.add(protocol)         # every run of its folder
                continue
            t = _constants(pd.read_parquet(path, columns=[c for c in OLDER_KEY if c in columns]))
            for k in set(_key_strings(t, OLDER_KEY)):
                if k in found:
                    found[k].add(protocol)
    order = list(protocols.available())
    older.metrics = {k: ",".join(sorted(v, key=lambda p: order.index(p) if p in order else len(order)))
                     for k, v in found.items()}
    return older


def _constants(df: pd.DataFrame) -> pd.DataFrame:
    for column, value in BACKFILL.items():
        if column not in df.columns and value != "recovered":
            df[column] = value
    return df


def backfill(df: pd.DataFrame, table: str | None = None, older: Older | None = None) -> pd.DataFrame:
    """A table of an older run with the provenance columns added since (:data:`BACKFILL`): ``table`` its name
    (default: the anchor, the curves), ``older`` what its folder's curves tell (default: ``df``'s own rows)."""
    table = table or protocols.anchor()
    df = _constants(df)
    missing = [c for c in ("protocol", "images", "metrics", "equal_regions") if c not in df.columns]
    if not missing:
        return df
    if "protocol" in missing:
        df["protocol"] = protocol_of_table(table) or ""
    if set(missing) - {"protocol"} and all(c in df.columns for c in OLDER_KEY):
        if older is None:
            older = Older(images=df.groupby(_key_strings(df, OLDER_KEY), sort=False)["image_id"].nunique().to_dict()
                          if "image_id" in df.columns else {},
                          equal_regions=(_equal_regions(df).groupby(_key_strings(df, OLDER_KEY), sort=False).first()
                                         .to_dict()))
        key = _key_strings(df, OLDER_KEY)
        anchor_protocol = protocol_of_table(protocols.anchor()) or ""
        fills = {"images": lambda k: older.images.get(k, -1),
                 "metrics": lambda k: older.metrics.get(k, anchor_protocol),
                 "equal_regions": lambda k: bool(older.equal_regions.get(k, True))}
        for column in missing:
            if column != "protocol":
                df[column] = key.map(fills[column]).to_numpy() if len(df) else pd.Series([], dtype=object)
    return df


def load_results(dirs, duplicates: str = "keep", show_progress: bool | None = None) -> Results:
    """Read every run below ``dirs`` (one folder or a list). See the module docstring."""
    if duplicates not in DUPLICATE_POLICIES:
        raise BenchError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got '{duplicates}'")
    roots, base = _roots(dirs)
    warnings: list[str] = []
    folders = table_folders(roots, warnings)
    anchor = declared_tables()[protocols.anchor()]
    if not folders:
        raise BenchError(f"no {anchor.name}.parquet of a finished run below {', '.join(map(str, roots))}: "
                         f"nothing to report")
    parts, rows, older_by_dir = [], [], {}
    for folder in progress(folders, desc="report: reading runs", unit="run", enabled=show_progress):
        path = folder / f"{anchor.name}.parquet"
        df = pd.read_parquet(path)
        older = None
        if any(c not in df.columns for c in ("images", "metrics", "equal_regions")) and all(
                c in df.columns or c in BACKFILL for c in OLDER_KEY) and "image_id" in df.columns:
            older = _older(folder, _constants(df.copy()))
            older_by_dir[str(folder)] = older
        df = backfill(df, anchor.name, older)
        missing = [c for c in CONDITION + list(anchor.columns) if c not in df.columns]
        if missing:
            raise BenchError(f"{path}: not a {anchor.name} table of the suite (missing columns {', '.join(missing)})")
        df["image_id"] = df["image_id"].astype(str)
        for key, g in _split_runs(df, _key(folder, base)):
            g = g.copy()
            g["run"] = key
            parts.append(g)
            first = g.iloc[0]
            rows.append({"run": key, "dir": str(path.parent), **{c: first[c] for c in CONDITION},
                         **{c: first[c] for c in ("preprocessing", "model_params") if c in g},
                         "L": int(g.step.max()), "n_images": int(g.image_id.nunique()),
                         "equal_regions": str(first["equal_regions"]).lower() not in ("false", "0")})
    runs = pd.DataFrame(rows)
    runs["duplicate"] = runs.apply(_condition_tuple, axis=1).duplicated(keep=False)
    runs = _apply_duplicates(runs, duplicates, warnings)
    for line in [*name_clashes(runs), *mixed_columns(runs)]:
        _warn(warnings, line)
    curves = pd.concat(parts, ignore_index=True)
    curves = curves[curves.run.isin(runs.run)].reset_index(drop=True)
    kept_dirs = set(runs.dir)
    tables = {}
    for name, declared in declared_tables().items():
        if name != anchor.name:
            load = _load_per_heatmap if declared.per_heatmap else _load_table
            if (rows_of_table := load(declared, runs, kept_dirs, warnings, older_by_dir)) is not None:
                tables[name] = rows_of_table
    return Results(runs=runs.reset_index(drop=True), curves=curves,
                   heatmaps=_load_heatmaps(runs, kept_dirs, warnings),
                   network=_load_network(roots), warnings=warnings, tables=tables)


def declared_tables() -> dict[str, "protocols.Table"]:
    """Every table the protocols declare (bench/protocols/), by name, the anchor (the curves) first."""
    return {t.name: t for cls in protocols.catalogue() for t in cls.tables}


def _apply_duplicates(runs: pd.DataFrame, policy: str, warnings: list[str]) -> pd.DataFrame:
    dup = runs[runs.duplicate]
    if dup.empty:
        return runs
    groups = dup.groupby(dup.apply(_condition_tuple, axis=1), sort=False)
    desc = "; ".join(f"{g.method.iloc[0]} (dataset {g.dataset.iloc[0]}, patch {g.patch.iloc[0]}): "
                     + ", ".join(g.run) for _, g in groups)
    if policy == "error":
        raise BenchError(f"the same condition was run more than once: {desc}; pass --duplicates keep or last")
    if policy == "last":
        drop = [r for _, g in groups for r in g.run.iloc[:-1]]
        _warn(warnings, f"duplicate runs: kept the last of each ({desc}); dropped {', '.join(drop)}")
        runs = runs[~runs.run.isin(drop)].copy()
        runs["duplicate"] = False
        return runs
    _warn(warnings, f"duplicate runs kept side by side, labelled by run key ({desc}); "
                    f"use --duplicates last to keep only the most recent")
    return runs


def _str_key(df: pd.DataFrame) -> pd.Series:
    return df[HEATMAP_KEY].astype(str).agg("\x1f".join, axis=1)


def _fill_provenance(df: pd.DataFrame, runs_in_dir: pd.DataFrame) -> pd.DataFrame | None:
    """Add the run key (and the provenance a bare table lacks) to a per-run side table; None if the rows
    cannot be assigned to a run."""
    df = df.copy()
    missing = [c for c in HEATMAP_KEY if c not in df.columns]
    if len(runs_in_dir) == 1:
        for c in missing:
            df[c] = runs_in_dir.iloc[0][c]
        df["run"] = runs_in_dir.iloc[0].run
        return df
    if missing:
        return None
    # a merged table of several runs: each row goes to the first run with its heatmap key
    first = runs_in_dir.assign(_k=_str_key(runs_in_dir)).drop_duplicates("_k").set_index("_k").run
    df["run"] = _str_key(df).map(first)
    return df[df.run.notna()]


def _first_run_only(df: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Of the runs that share a heatmap key (same heatmaps, e.g. a patch sweep), keep the first's rows."""
    rank = df.run.map({r: i for i, r in enumerate(runs.run)})
    first = rank.groupby(_str_key(df)).transform("min")
    return df[rank == first].drop_duplicates(["run", "image_id"]).reset_index(drop=True)


def _load_per_heatmap(table: "protocols.Table", runs: pd.DataFrame, dirs: set[str], warnings: list[str],
                      older_by_dir: dict | None = None) -> pd.DataFrame | None:
    """<table>.parquet of rows that depend on the heatmaps only (``per_heatmap``; module docstring)."""
    parts = []
    for d in sorted(dirs):
        path = Path(d) / f"{table.name}.parquet"
        if not path.is_file():
            continue
        df = pd.read_parquet(path)
        if "image_id" not in df.columns and "image" in df.columns:
            df = df.rename(columns={"image": "image_id"})
        if any(c not in df.columns for c in table.columns):
            _warn(warnings, f"{path}: skipped, it lacks one of the columns {', '.join(table.columns)}")
            continue
        df["image_id"] = df["image_id"].astype(str)
        df = _fill_provenance(df, runs[runs.dir == d])
        if df is None:
            _warn(warnings, f"{path}: skipped, no provenance columns and several runs in its folder")
            continue
        parts.append(df)
    if not parts:
        return None
    return _first_run_only(pd.concat(parts, ignore_index=True), runs)


def _heatmaps_of_dir(d: str, runs_in_dir: pd.DataFrame, warnings: list[str]) -> pd.DataFrame | None:
    pq, npz = Path(d) / "heatmaps.parquet", Path(d) / "heatmaps.npz"
    if pq.is_file():
        df = pd.read_parquet(pq)
        need = ["image_id", "height", "width", "heatmap"]
        if any(c not in df.columns for c in need):
            _warn(warnings, f"{pq}: skipped, it lacks one of the columns {', '.join(need)}")
            return None
        arrays = [np.asarray(h, dtype=np.float64).reshape(int(hh), int(ww))
                  for h, hh, ww in zip(df.heatmap, df.height, df.width)]
        images = None
        if {"image", "channels", "raw_low", "raw_high"} <= set(df.columns):  # the inputs, H×W×C in [0, 1]
            images = [None if im is None or (isinstance(im, float) and np.isnan(im)) else
                      np.clip((np.asarray(im, np.float64).reshape(int(c), int(hh), int(ww)).transpose(1, 2, 0) - lo)
                              / ((hi - lo) or 1.0), 0, 1)
                      for im, c, hh, ww, lo, hi in zip(df.image, df.channels, df.height, df.width, df.raw_low,
                                                       df.raw_high)]
        df = df.drop(columns=[c for c in ("heatmap", "height", "width", "image", "channels", "raw_low", "raw_high")
                              if c in df.columns]).assign(heatmap=arrays, image=images)
        path = pq
    elif npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            keys = list(z.files)
            arrays = [np.asarray(z[k], dtype=np.float64) for k in keys]
        bad = [k for k, a in zip(keys, arrays) if a.ndim != 2]
        if bad:
            _warn(warnings, f"{npz}: skipped, arrays must be H×W (key {bad[0]!r} is not)")
            return None
        df = pd.DataFrame({"image_id": keys, "heatmap": arrays})
        path = npz
    else:
        return None
    df["image_id"] = df["image_id"].astype(str)
    out = _fill_provenance(df, runs_in_dir)
    if out is None:
        _warn(warnings, f"{path}: skipped, no provenance columns and several runs in its folder")
    return out


def _load_heatmaps(runs: pd.DataFrame, dirs: set[str], warnings: list[str]) -> pd.DataFrame | None:
    parts = [p for d in sorted(dirs) if (p := _heatmaps_of_dir(d, runs[runs.dir == d], warnings)) is not None]
    if not parts:
        return None
    keep = HEATMAP_KEY + ["run", "image_id", "heatmap", "image"]
    return _first_run_only(pd.concat([p.reindex(columns=keep) for p in parts], ignore_index=True), runs)


def _load_table(table: "protocols.Table", runs: pd.DataFrame, dirs: set[str], warnings: list[str],
                older_by_dir: dict | None = None) -> pd.DataFrame | None:
    """<table>.parquet next to the curve tables; each row to the run of its folder with the same condition."""
    name = table.name
    parts = []
    for d in sorted(dirs):
        path = Path(d) / f"{name}.parquet"
        if not path.is_file():
            continue
        df = backfill(pd.read_parquet(path), name, (older_by_dir or {}).get(d) or Older())
        missing = [c for c in CONDITION + list(table.columns) if c not in df.columns]
        if missing:
            _warn(warnings, f"{path}: skipped, not a {name} table of the suite (missing {', '.join(missing)})")
            continue
        df["image_id"] = df["image_id"].astype(str)
        here = runs[runs.dir == d]
        first: dict[tuple, str] = {}
        for _, r in here.iterrows():
            first.setdefault(_condition_tuple(r), r.run)
        df["run"] = None
        for key, g in df.groupby(CONDITION, sort=False, dropna=False):
            df.loc[g.index, "run"] = first.get(tuple(str(v) for v in key))
        if df.run.isna().any():
            _warn(warnings, f"{path}: {int(df.run.isna().sum())} row(s) of a condition without curves, left out")
        parts.append(df[df.run.notna()].drop_duplicates(["run"] + [c for c in table.keys if c in df.columns]))
    return pd.concat(parts, ignore_index=True) if parts else None


NETWORK_COLUMNS = ["iteration", "test_accuracy", "mean", "ci_low", "ci_high"]


def network_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A network-quality table with the value columns named as bench/run/network_quality.py writes them; an older
    table's ``<quantity>_mean``, ``<quantity>_ci_low``, ``<quantity>_ci_high`` (``_sem``) are read as those."""
    if "mean" in df.columns:
        return df
    prefixes = [c[:-len("_mean")] for c in df.columns if c.endswith("_mean")]
    for prefix in prefixes:
        if {f"{prefix}_ci_low", f"{prefix}_ci_high"} <= set(df.columns):
            return df.rename(columns={f"{prefix}_{s}": s for s in ("mean", "ci_low", "ci_high", "sem")})
    return df


def _load_network(roots: list[Path]) -> pd.DataFrame | None:
    parts = []
    for path in find_files(roots, "network_quality.parquet") + find_files(roots, "network_quality.csv"):
        df = network_columns(pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path))
        missing = [c for c in NETWORK_COLUMNS if c not in df.columns]
        if missing:
            raise BenchError(f"{path}: a network-quality table needs columns {', '.join(NETWORK_COLUMNS)} "
                             f"(missing {', '.join(missing)})")
        parts.append(df)
    return pd.concat(parts, ignore_index=True) if parts else None


# ---------------------------------------------------------------------------------------------- labels


def format_params(params_json: str) -> str:
    try:
        params = json.loads(params_json)
    except (TypeError, ValueError):
        return str(params_json)
    if not isinstance(params, dict):
        return str(params)
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "no params"


def _format_value(col: str, value) -> str:
    if col == "method_params":
        return format_params(value)
    return f"{col}={value}"


def series_labels(meta: pd.DataFrame, group_cols: list[str], extra_cols: list[str] | None = None) -> dict[str, str]:
    """Run key → legend label: the method's display name, plus those of ``extra_cols`` (default: all
    :data:`CONDITION` columns outside ``group_cols``) that vary among runs of the same method within one
    group (panel / table column), plus the run key when runs are otherwise identical (duplicates).
    The label of a run is the same in every group, so one legend serves a whole figure."""
    extra = [c for c in (extra_cols if extra_cols is not None else CONDITION)
             if c not in group_cols and c != "method" and c in meta.columns]
    varying: dict[str, set[str]] = {}
    needs_run: set[str] = set()
    for _, g in meta.groupby([*group_cols, "method"] if group_cols else ["method"], sort=False, dropna=False):
        method = g.method.iloc[0]
        cols = [c for c in extra if g[c].astype(str).nunique() > 1]
        varying.setdefault(method, set()).update(cols)
        if len(g) > 1 and g[extra].astype(str).duplicated().any():
            needs_run.add(method)
    labels = {}
    for _, r in meta.iterrows():
        parts = [_format_value(c, r[c]) for c in extra if c in varying.get(r.method, ())]
        label = display_name(r.method) + (f" ({'; '.join(parts)})" if parts else "")
        if r.method in needs_run:
            label += f" [{r.run}]"
        labels[r.run] = label
    return labels


def series_order(meta: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Run keys in legend order: catalogue order of methods, then label, then run key."""
    method = dict(zip(meta.run, meta.method))
    return sorted(meta.run, key=lambda r: (method_sort_key(method[r]), labels[r], r))


def linestyle_index(meta: pd.DataFrame, order: list[str], labels: dict[str, str]) -> dict[str, int]:
    """Per run, which line style: the rank of its label among the distinct labels of its method in
    ``order`` (runs with the same label — the same line in the legend — share a style)."""
    method = dict(zip(meta.run, meta.method))
    seen: dict[str, list[str]] = {}
    out = {}
    for r in order:
        names = seen.setdefault(method[r], [])
        if labels[r] not in names:
            names.append(labels[r])
        out[r] = names.index(labels[r])
    return out
