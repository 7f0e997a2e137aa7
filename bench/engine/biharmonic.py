"""Biharmonic inpainting of masked pixels, batched on the device — the system
``skimage.restoration.inpaint_biharmonic`` solves (Damelin & Hoang 2018), in float64.

Every masked pixel p gets one equation Σ_q c_p(q) u_q = 0, the discrete biharmonic Δ²u at p, with the
known pixels moved to the right-hand side. Its coefficients are ``laplace(laplace(δ_p))`` on the window
p ± 2 clipped to the image, the Laplacian with reflecting ("half-sample symmetric") borders as in
``scipy.ndimage.laplace``. Separably, with D the 1-D second difference of a clipped window,

    c_p(di, dj) = (D²e)_di e_dj + 2 (De)_di (De)_dj + e_di (D²e)_dj,

the 13-point stencil (20, −8, 2, 1) inside, other rows within 2 pixels of the border (which makes the
matrix non-symmetric there). One system per image holds all its masked pixels (skimage's default, not
split into regions); all channels share its matrix. The result is clipped per channel to the range of
the image's known pixels, as skimage does.

A perturbation step masks one region, so the systems are small: they are built as dense matrices, all
items with the same number of unknowns together, and solved by LU with partial pivoting
(``torch.linalg.solve``) — exact up to float64 rounding, no iteration. An item has no padding and its
own matrix, so its values do not depend on the batch. Above DENSE_MAX unknowns a system goes to SciPy's
sparse direct solver on the host (float64, the same matrix), one item at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import BenchError

DENSE_MAX = 2048  # unknowns: a dense float64 system of this size is 32 MiB
DENSE_BYTES = 2 ** 27  # dense matrices solved at once (128 MiB)
RADIUS = 2
OFFSETS = [(di, dj) for di in range(-RADIUS, RADIUS + 1) for dj in range(-RADIUS, RADIUS + 1)]


def _axis_terms(n: int) -> np.ndarray:
    """(n, 3, 5): for each position i of an axis of length n, e, De and D²e of its clipped window,
    indexed by offset −2..2 (zero outside the window)."""
    out = np.zeros((n, 3, 2 * RADIUS + 1))
    for i in range(n):
        lo, hi = max(i - RADIUS, 0), min(i + RADIUS + 1, n)
        m = hi - lo
        d = np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1) + np.diag(np.ones(m - 1), -1)
        d[0, 0] += 1  # reflect: f(−1) = f(0)
        d[-1, -1] += 1  # reflect: f(m) = f(m − 1)
        e = np.zeros(m)
        e[i - lo] = 1
        window = slice(lo - i + RADIUS, hi - i + RADIUS)
        out[i, 0, window], out[i, 1, window], out[i, 2, window] = e, d @ e, d @ d @ e
    return out


def stencils(h: int, w: int) -> np.ndarray:
    """(H, W, 5, 5) float64: c_p(di, dj) for every pixel p of an H×W image."""
    r, c = _axis_terms(h), _axis_terms(w)
    return (np.einsum("ia,jb->ijab", r[:, 2], c[:, 0]) + 2 * np.einsum("ia,jb->ijab", r[:, 1], c[:, 1])
            + np.einsum("ia,jb->ijab", r[:, 0], c[:, 2]))


_STENCILS: dict[tuple[int, int, str], torch.Tensor] = {}


def _stencils(h: int, w: int, device) -> torch.Tensor:
    key = (h, w, str(device))
    if key not in _STENCILS:
        _STENCILS[key] = torch.tensor(stencils(h, w).reshape(h * w, len(OFFSETS)), device=device)
    return _STENCILS[key]


def _systems(x: torch.Tensor, mask: torch.Tensor, items: torch.Tensor, k: int):
    """For ``items`` (n,), each with k masked pixels: their pixels (n, k), the coefficient matrices
    (n, k, k) as COO (rows, cols, values per item) and the right-hand sides (n, k, C), float64."""
    n = len(items)
    h, w = mask.shape[-2:]
    m = mask[items].reshape(n, h * w)
    pix = m.nonzero()[:, 1].view(n, k)  # row-major: the k masked pixels of each item
    unknown = torch.full((n, h * w), -1, dtype=torch.long, device=x.device)
    unknown.scatter_(1, pix, torch.arange(k, device=x.device).expand(n, k))
    coef = _stencils(h, w, x.device)[pix]  # (n, k, 25)
    i, j = pix // w, pix % w
    di = torch.tensor([o[0] for o in OFFSETS], device=x.device)
    dj = torch.tensor([o[1] for o in OFFSETS], device=x.device)
    qi, qj = i[..., None] + di, j[..., None] + dj
    inside = (qi >= 0) & (qi < h) & (qj >= 0) & (qj < w)
    q = (qi.clamp(0, h - 1) * w + qj.clamp(0, w - 1)).view(n, -1)  # (n, k·25)
    col = unknown.gather(1, q).view(n, k, -1)
    coef = torch.where(inside, coef, torch.zeros_like(coef))
    known = (col < 0) & inside
    xv = x[items].reshape(n, x.shape[1], h * w).to(torch.float64)
    xq = xv.gather(2, q[:, None].expand(n, x.shape[1], q.shape[1])).view(n, x.shape[1], k, -1)
    rhs = -(torch.where(known, coef, torch.zeros_like(coef))[:, None] * xq).sum(-1).transpose(1, 2)
    entry = (col >= 0) & (coef != 0)
    return pix, col, coef, entry, rhs


def _solve_dense(col, coef, entry, rhs) -> torch.Tensor:
    n, k = col.shape[:2]
    a = torch.zeros(n, k, k, dtype=torch.float64, device=rhs.device)
    rows = torch.arange(k, device=rhs.device).view(1, k, 1).expand_as(col)
    items = torch.arange(n, device=rhs.device).view(n, 1, 1).expand_as(col)
    a.index_put_((items[entry], rows[entry], col[entry]), coef[entry])
    try:
        return torch.linalg.solve(a, rhs)
    except torch.linalg.LinAlgError as exc:  # not seen on any mask tried (tests/test_biharmonic.py)
        raise BenchError(f"biharmonic inpainting: a singular system of {k} unknowns ({exc}); "
                         "use perturbation.params.solver=host") from None


def _solve_sparse(col, coef, entry, rhs) -> torch.Tensor:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    n, k = col.shape[:2]
    out = torch.empty_like(rhs)
    rows = np.broadcast_to(np.arange(k)[:, None], col.shape[1:])
    for t in range(n):  # only systems above DENSE_MAX unknowns (regions wider than ~45×45 pixels)
        e = entry[t].cpu().numpy()
        a = sp.csc_matrix((coef[t].cpu().numpy()[e], (rows[e], col[t].cpu().numpy()[e])), shape=(k, k))
        out[t] = torch.from_numpy(np.asarray(spsolve(a, rhs[t].cpu().numpy())).reshape(k, -1)).to(out.device)
    return out


def inpaint_biharmonic(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W), mask (N, 1, H, W) bool → x with the masked pixels inpainted (x's dtype and device).

    An image with every pixel masked, or none, is returned as it is (nothing to inpaint from, or to)."""
    n, c, h, w = x.shape
    out = x.clone(memory_format=torch.contiguous_format)
    counts = mask.reshape(n, -1).sum(1)
    todo = (counts > 0) & (counts < h * w)
    known = ~mask.expand(n, c, h, w)
    big = torch.finfo(x.dtype).max
    lo = torch.where(known, x, torch.full_like(x, big)).amin((2, 3))  # (N, C): range of the known pixels
    hi = torch.where(known, x, torch.full_like(x, -big)).amax((2, 3))
    for k in torch.unique(counts[todo]).tolist():
        group = torch.nonzero(todo & (counts == k))[:, 0]
        per_solve = len(group) if k > DENSE_MAX else max(1, DENSE_BYTES // (8 * k * k))
        for start in range(0, len(group), per_solve):
            items = group[start:start + per_solve]
            pix, col, coef, entry, rhs = _systems(x, mask, items, k)
            u = (_solve_sparse if k > DENSE_MAX else _solve_dense)(col, coef, entry, rhs)  # (n, k, C)
            u = torch.minimum(torch.maximum(u, lo[items, None].double()), hi[items, None].double())
            flat = out.view(n, c, h * w)
            flat[items[:, None, None], torch.arange(c, device=x.device).view(1, c, 1), pix[:, None, :]] = \
                u.transpose(1, 2).to(x.dtype)
    return out
