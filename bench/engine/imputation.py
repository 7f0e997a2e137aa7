"""Linear imputation of removed pixels, batched on the device (ROAD, Rong et al. ICML 2022; DEFINITIONS §9).

Every removed pixel i takes the value that makes it the weighted mean of its neighbours j inside the image
(weight 1/6 for the 4 direct, 1/12 for the 4 diagonal ones), the kept pixels fixed at the image's values:

    d_i u_i − Σ_{j removed} w_ij u_j = Σ_{j kept} w_ij x_j,      d_i = Σ_{j in the image} w_ij,

one sparse system per image, channel and mask. Its matrix D − W restricted to the removed pixels is
symmetric and, unless every pixel is removed, positive definite (each connected group of removed pixels
borders a kept one), so all systems of a batch are solved together by Jacobi-preconditioned conjugate
gradients in float64, the neighbour sums as 8 shifted multiply-adds over the whole batch. A system has
converged when its residual is ≤ ``tol`` × its right-hand side (both Euclidean norms), checked every
CHECK_EVERY iterations; it is then left as it is while the others go on, so its values do not depend on
the batch it was solved in (elementwise operations only: the same bits for any batch). ``max_iter``
iterations without convergence end in one line. An image with every pixel removed has nothing to impute from: its
values become 0 (in model-input units: the dataset's mean colour).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import BenchError

TOL = 1e-10
CHECK_EVERY = 8  # iterations between two convergence checks (each one waits for the device)


WEIGHTS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12),
           (1, 0, 1 / 6), (1, 1, 1 / 12))  # (row offset, column offset, weight) of the 8 neighbours


def _neighbours(v: torch.Tensor) -> torch.Tensor:
    """Σ_j w_ij v_j over the neighbours inside the image (zero outside), for (N, 1, H, W) fields."""
    h, w = v.shape[-2:]
    padded = F.pad(v, (1, 1, 1, 1))
    out = torch.zeros_like(v)
    for di, dj, wt in WEIGHTS:
        out.add_(padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w], alpha=wt)
    return out


def default_max_iter(h: int, w: int) -> int:
    """Enough for the slowest case, one removed block spanning the image (CG needs O(its diameter) steps)."""
    return 50 * max(h, w) + 100


def linear_imputation(x: torch.Tensor, removed: torch.Tensor, tol: float = TOL, max_iter: int | None = None
                      ) -> torch.Tensor:
    """x (N, C, H, W), removed (N, 1, H, W) bool → x with the removed pixels imputed (x's dtype and device)."""
    n, c, h, w = x.shape
    max_iter = default_max_iter(h, w) if max_iter is None else max_iter
    m = removed.expand(n, c, h, w).reshape(n * c, 1, h, w).to(torch.float64)
    known = x.reshape(n * c, 1, h, w).to(torch.float64) * (1 - m)
    d = _neighbours(torch.ones_like(m[:1]))  # (1, 1, H, W): Σ_j w_ij inside the image

    b = _neighbours(known) * m
    u = b / d  # the weighted mean of the kept neighbours: the exact answer for isolated pixels
    b_norm = b.square().sum((1, 2, 3), keepdim=True).sqrt()
    # the systems still being solved, compacted every CHECK_EVERY iterations; a converged one keeps its u
    idx = torch.arange(n * c, device=x.device)
    mi, bn, ui = m, b_norm, u.clone()
    r = b - (d * ui - _neighbours(ui)) * mi
    z = r / d
    p = z
    rz = (r * z).sum((1, 2, 3), keepdim=True)
    res = r.square().sum((1, 2, 3), keepdim=True).sqrt()
    it = 0
    while True:
        keep = (res > tol * bn).flatten()
        if not bool(keep.all()):  # write back the converged systems, go on with the others
            done = ~keep
            u[idx[done]] = ui[done]
            idx, mi, bn, ui, r, p, rz = idx[keep], mi[keep], bn[keep], ui[keep], r[keep], p[keep], rz[keep]
        if len(idx) == 0 or it >= max_iter:
            break
        for _ in range(min(CHECK_EVERY, max_iter - it)):
            ap = (d * p - _neighbours(p)) * mi  # (D − W) p on the removed pixels
            pap = (p * ap).sum((1, 2, 3), keepdim=True)
            alpha = torch.where(pap > 0, rz / pap.clamp_min(1e-300), torch.zeros_like(pap))
            ui.add_(alpha * p)
            r.sub_(alpha * ap)
            z = r / d
            rz_new = (r * z).sum((1, 2, 3), keepdim=True)
            beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-300), torch.zeros_like(rz))
            p = z + beta * p
            rz = rz_new
            it += 1
        res = r.square().sum((1, 2, 3), keepdim=True).sqrt()
    if len(idx):
        worst = float((res / bn.clamp_min(1e-300)).max())
        raise BenchError(f"linear imputation did not converge in max_iter={max_iter} iterations (relative "
                         f"residual {worst:.1e} > tol={tol:g}); raise perturbation.params.max_iter")
    out = known + u * m
    return out.view(n, c, h, w).to(x.dtype)
