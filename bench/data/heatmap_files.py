"""Heatmaps computed elsewhere, read by image id (``method=precomputed``): a folder of ``.npy`` files (the id is
the file's path below the folder without ``.npy``, '/'-separated), one ``.npz`` (one array per key = id) or a
parquet table like the suite's own ``heatmaps.parquet`` (``image_id``, ``height``, ``width``, ``heatmap`` as a
flat row-major array; a table of several methods needs ``method``). Each heatmap is H×W (a pixel heatmap) or
C×H×W (relevance per channel, pooled by the run). Read without unpickling (``allow_pickle=False``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BenchError

FORMATS = "a folder of .npy files, one .npz file, or a .parquet table (image_id, height, width, heatmap)"


def _ids_of_folder(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.npy"))}


def _parquet(path: Path, method: str | None) -> dict[str, np.ndarray]:
    import pandas as pd

    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # not a parquet file, truncated, …
        raise BenchError(f"method.params.path={path}: cannot be read as a parquet table ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    need = ["image_id", "height", "width", "heatmap"]
    if any(c not in df.columns for c in need):
        raise BenchError(f"method.params.path={path}: a heatmap table needs the columns {', '.join(need)}; "
                         f"it has {', '.join(map(str, df.columns))}")
    methods = sorted(map(str, df["method"].unique())) if "method" in df.columns else []
    if method is not None:
        if method not in methods:
            raise BenchError(f"method.params.source_method={method}: {path} holds heatmaps of "
                             f"{', '.join(methods) or 'no named method'}")
        df = df[df["method"].astype(str) == method]
    elif len(methods) > 1:
        raise BenchError(f"method.params.path={path} holds heatmaps of several methods ({', '.join(methods)}); "
                         f"choose one with method.params.source_method")
    # a table of one method's runs at several patch sizes holds the same heatmap several times: taken once;
    # different heatmaps for one image are ambiguous: refused. Ids compare as the run reads them, as text
    # (an id 7 and an id '7' are one image)
    df = df.assign(image_id=df.image_id.astype(str))
    repeated = df[df.image_id.duplicated(keep=False)]
    for image_id, rows in repeated.groupby("image_id", sort=True):
        first = np.asarray(rows.heatmap.iloc[0])
        if any((int(h), int(w)) != (int(rows.height.iloc[0]), int(rows.width.iloc[0])) or
               not np.array_equal(np.asarray(flat), first, equal_nan=True)
               for h, w, flat in zip(rows.height, rows.width, rows.heatmap)):
            raise BenchError(f"method.params.path={path} holds {len(rows)} different heatmaps for image "
                             f"'{image_id}'{' of one method' if 'method' in df.columns else ''}; which one is meant "
                             f"is ambiguous: keep one (e.g. the rows of one patch size)")
    df = df.drop_duplicates("image_id")
    out = {}
    for image_id, h, w, flat in zip(df.image_id, df.height, df.width, df.heatmap):
        flat = np.asarray(flat)
        if flat.size != int(h) * int(w):
            raise BenchError(f"method.params.path={path}: heatmap '{image_id}' has {flat.size} values, but its "
                             f"height × width is {int(h)} × {int(w)}")
        out[image_id] = flat.reshape(int(h), int(w))
    return out


def read_heatmaps(path: str, ids: list[str], shape: tuple[int, int, int], what: str,
                  method: str | None = None) -> dict[str, np.ndarray]:
    """{image id: float32 array (H, W) or (C, H, W)} for every id in ``ids``, checked against the images'
    ``shape`` (C, H, W) of dataset ``what``; one line naming the first offender otherwise."""
    from ..checks import regular_file

    p = Path(path).expanduser()
    regular_file(f"method.params.path={path}", p)
    if not p.exists():
        raise BenchError(f"method.params.path={path} does not exist; give {FORMATS}")
    if p.is_dir():
        files = _ids_of_folder(p)
        if not files:
            raise BenchError(f"method.params.path={path} is a folder without .npy files; give {FORMATS}")
        source = {i: files[i] for i in ids if i in files}
        for i in source:
            regular_file(f"method.params.path={path}: heatmap '{i}'", source[i])
        load = lambda i: np.load(source[i], allow_pickle=False)  # noqa: E731
        known = list(files)
    elif p.suffix == ".npz":
        try:
            archive = np.load(p, allow_pickle=False)
        except Exception as exc:
            raise BenchError(f"method.params.path={path}: cannot be read as .npz ({type(exc).__name__})") from None
        dup = next((k for k in archive.files if archive.files.count(k) > 1), None)
        if dup is not None:
            raise BenchError(f"method.params.path={path} holds two heatmaps for image '{dup}'; which one is meant is "
                             f"ambiguous: keep one")
        source = {i: i for i in ids if i in archive.files}
        load = lambda i: archive[i]  # noqa: E731
        known = list(archive.files)
    elif p.suffix == ".parquet":
        table = _parquet(p, method)
        source = {i: i for i in ids if i in table}
        load = table.__getitem__
        known = list(table)
    else:
        raise BenchError(f"method.params.path={path}: unknown format '{p.suffix}'; give {FORMATS}")
    missing = [i for i in ids if i not in source]
    if missing:
        like = ", ".join(f"'{k}'" for k in known[:3])
        raise BenchError(f"method.params.path={path} has no heatmap for image '{missing[0]}' of dataset '{what}' "
                         f"({len(missing)} of its first {len(ids)} images have none; its ids are like {like})")
    c, h, w = shape
    out = {}
    for i in ids:
        try:
            a = load(i)
        except Exception as exc:  # a corrupt .npy, an object array (refused: no unpickling)
            raise BenchError(f"method.params.path={path}: heatmap '{i}' cannot be read ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]})") from None
        if a.dtype.kind not in "fiub" or a.shape not in ((h, w), (c, h, w)):
            raise BenchError(f"method.params.path={path}: heatmap '{i}' is {a.dtype} {tuple(a.shape)}; the images "
                             f"of dataset '{what}' need a number array of shape ({h}, {w}) or ({c}, {h}, {w})")
        a = np.array(a, dtype=np.float32)  # a writable copy
        if not np.isfinite(a).all():
            raise BenchError(f"method.params.path={path}: heatmap '{i}' has non-finite values")
        out[i] = a
    return out
