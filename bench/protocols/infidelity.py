"""Infidelity (Yeh, Hsieh, Suggala, Inouye, Ravikumar, NeurIPS 2019, "On the (in)fidelity and sensitivity of
explanations"; DEFINITIONS §9).

    INFD(h, f, x) = E_I[(Iᵀh − (f_c(x) − f_c(x − I)))²],   Iᵀh = Σ_p I_p h_p

estimated per image from ``samples`` seeded perturbations I (the k-th of an image keyed fold(key(seed, stream,
image), k): the same whatever the batch, shard or device). h is the pooled pixel heatmap (H, W); I_p is the channel
mean of the perturbation of pixel p, so with sum pooling (h_p = Σ_c R_cp) Iᵀh equals Captum's Σ I ⊙ R whenever I
is the same in every channel (and whenever R_cp = h_p / C otherwise); with one channel it is exactly Captum's.

``perturbation``: ``noise`` (default) — I_p ~ N(0, ``sigma``²) i.i.d. per pixel in model-input units, the same in
every channel (σ = 0.1: a tenth of the data's per-channel std, local enough that the signed gradient is near the
optimal explanation, Yeh et al. §3, while Δf stays ~1e4 × the float32 rounding of the logits); ``square`` — a square of side ``size`` px (null: ⌊min(H, W)/7⌉, 4 on 28×28)
at a seeded uniform position is set to the ``substrate`` (default black, as Yeh's 0), I = x − substrate on the
square, 0 elsewhere (for local heatmaps: gradients); ``square_binary`` — the same inputs, I_p = 1 on the square
(Yeh's binary I for heatmaps that already carry the input, x ⊙ ∂f/∂x, LRP: Iᵀh = Σ_{p∈S} h_p).

``normalize`` (default true; Yeh's code always, Captum ``normalize=True``): infidelity is not invariant to the
heatmap's scale, so h is first scaled by the per-image least-squares β = E[(Iᵀh)(Δf)] / E[(Iᵀh)²] (β = 0 when
Iᵀh ≡ 0), and INFD = E[(β Iᵀh − Δf)²]; β is recorded either way. Score ``logit`` (the paper's). Per image also
``infidelity_random``: the same for a seeded uniform random heatmap against the same I and Δf (no extra forward
pass), and the difference. All images × samples go through the model in chunks of ``batch_size``, a sample's I
made in its chunk; an input the perturbation left unchanged has Δf = 0. Table ``infidelity``: one row per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from bench.engine import counter_rng
from bench.engine.seeding import keys_of, rand_per_image
from bench.errors import BenchError
from bench.protocols.base import (SCORES, Batch, Protocol, Quantity, RunInfo, Table, boolean, choice, integer, number,
                                  optional, setting, substrate_settings)

PERTURBATIONS = ("noise", "square", "square_binary")
STREAMS = {"noise": "infidelity_noise", "square": "infidelity_square", "square_binary": "infidelity_square"}
RANDOM_HEATMAP = "infidelity_random_heatmap"


def sample_keys(seed: int, stream: str, image_ids: list[str], samples: int, device) -> torch.Tensor:
    """int64 (B·samples,) generator keys of the perturbations, image-major: the k-th of an image is keyed
    fold(key(seed, stream, image), k)."""
    images = keys_of(seed, stream, list(image_ids)).to(device)
    k = torch.arange(samples, dtype=torch.int64, device=device)
    return counter_rng.fold(images.repeat_interleave(samples), k.repeat(len(images)))


def default_size(h: int, w: int) -> int:
    return max(1, round(min(h, w) / 7))


def square_masks(keys: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """bool (N, H, W): per key a square of side ``size`` at a uniform position (top, left) drawn from its key."""
    u = counter_rng.uniform(keys, (2,), keys.device).double()
    top = (u[:, 0] * (h - size + 1)).floor().long().clamp_(max=h - size)
    left = (u[:, 1] * (w - size + 1)).floor().long().clamp_(max=w - size)
    rows, cols = torch.arange(h, device=keys.device), torch.arange(w, device=keys.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)
    return in_rows[:, :, None] & in_cols[:, None, :]


def perturb(kind: str, keys: torch.Tensor, x: torch.Tensor, substrate: torch.Tensor | None, sigma: float,
            size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The perturbed inputs x − I (N, C, H, W) and the per-pixel I_p (N, H·W, float64: the channel mean of I, or
    the square's indicator) of the perturbations keyed ``keys`` (N,) of the inputs ``x`` (N, C, H, W)."""
    n, _, h, w = x.shape
    if kind == "noise":
        noise = counter_rng.normal(keys, (h * w,), x.device) * sigma  # float32, the perturbation applied
        return x - noise.view(n, 1, h, w), noise.double()
    mask = square_masks(keys, size, h, w)
    perturbed = torch.where(mask[:, None], substrate, x)
    if kind == "square_binary":
        return perturbed, mask.reshape(n, h * w).double()
    return perturbed, (x - perturbed).double().mean(1).reshape(n, h * w)


def infidelities(sums: torch.Tensor, drops: torch.Tensor, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, mean over dim 1 of (β·a − Δf)² and β = mean(a·Δf) / mean(a²) (0 when a ≡ 0); β ≡ 1 unless
    ``normalize``. ``sums`` a = Iᵀh (B, samples, …), ``drops`` Δf broadcastable to it."""
    aa, ad = sums.square().mean(1), (sums * drops).mean(1)
    beta = torch.where(aa > 0, ad / torch.where(aa > 0, aa, 1.0), 0.0)
    scale = beta if normalize else torch.ones_like(beta)
    return (scale.unsqueeze(1) * sums - drops).square().mean(1), beta


@dataclass(frozen=True)
class Infidelity(Protocol):
    perturbation: str = setting("noise", choice(*PERTURBATIONS),
                                "I: noise (Gaussian per pixel), square (I = x − substrate on a random square), "
                                "square_binary (I = the square's indicator, for heatmaps that carry the input)")
    sigma: float = setting(0.1, number(0, low_open=True), "σ of the noise perturbation (model-input units)")
    size: int | None = setting(None, optional(integer(low=1)), "side of the square perturbations in px "
                                                               "(null: min(H, W)/7 rounded, 4 on 28×28)")
    samples: int = setting(100, integer(low=2), "perturbations per image (≥ 2: one sample fits β exactly)")
    normalize: bool = setting(True, boolean(), "scale the heatmap by the least-squares β per image (Yeh; "
                                                    "makes heatmaps of different scales comparable)")
    score: str = setting("logit", choice(*SCORES), "the tracked score (the paper: the logit)")
    substrate: str = substrate_settings("zero")["substrate"]
    blur_sigma: float = substrate_settings()["blur_sigma"]
    blur_kernel: int = substrate_settings()["blur_kernel"]

    title = "infidelity"
    tables = (Table("infidelity", ("image_id", "label", "target_class", "infidelity", "infidelity_random",
                                   "infidelity_beta"), keys=("image_id",)),)
    quantities = (
        Quantity("infidelity", -1, "infidelity", headline=True, printed="infidelity", unit="({score})²",
                 undefined="the model's score of every image's perturbed inputs was not finite"),
        Quantity("infidelity_random", 0, "infidelity (random heatmap)", unit="({score})²"),
        Quantity("infidelity_minus_random", -1, "infidelity − random", unit="({score})²"),
    )

    def square_size(self, h: int, w: int) -> int:
        return default_size(h, w) if self.size is None else self.size

    def check(self, run: RunInfo) -> None:
        _, h, w = run.image_shape
        if self.perturbation != "noise" and self.square_size(h, w) >= min(h, w):
            raise BenchError(f"infidelity.size={self.square_size(h, w)} must be smaller than the shorter side of "
                             f"the {h}×{w} images")

    def launch(self, batch: Batch) -> Callable[[], dict[str, pd.DataFrame]]:
        run, x, target = batch.run, batch.x, batch.target
        h, w = run.image_hw
        kind, n, sigma, score = self.perturbation, self.samples, self.sigma, self.score
        size = self.square_size(h, w)
        total = len(x) * n
        keys = sample_keys(run.seed, STREAMS[kind], batch.image_ids, n, x.device)
        heat = torch.stack([batch.heatmap.double().reshape(len(x), h * w),
                            rand_per_image(run.seed, RANDOM_HEATMAP, list(batch.image_ids), (h * w,),
                                           x.device).double()], 1)  # (B, 2, H·W): the heatmap, the random one
        substrate = None if kind == "noise" else batch.substrate(self.substrate, self.blur_sigma, self.blur_kernel)
        with torch.inference_mode():
            f_x = run.scores(x, target, score)
            drops = torch.empty(total, dtype=torch.float64, device=x.device)
            sums = torch.empty(total, 2, dtype=torch.float64, device=x.device)
            for start in range(0, total, run.batch_size):
                stop = min(start + run.batch_size, total)
                b = torch.arange(start, stop, device=x.device) // n
                inputs, i_p = perturb(kind, keys[start:stop], x[b], None if substrate is None else substrate[b],
                                      sigma, size)
                drop = (f_x[b] - run.scores(inputs, target[b], score)).double()
                changed = (inputs != x[b]).flatten(1).any(1)  # a square on pixels already at the substrate:
                drops[start:stop] = torch.where(changed, drop, 0.0)  # Δf = 0, not the rounding of another batch
                sums[start:stop] = torch.bmm(heat[b], i_p.unsqueeze(-1)).squeeze(-1)
        infd, beta = infidelities(sums.view(len(x), n, 2), drops.view(len(x), n, 1), self.normalize)
        rows_of = batch.per_image()
        settings = {"perturbation": kind, "sigma": sigma if kind == "noise" else np.nan,
                    "size": pd.array([None if kind == "noise" else size] * len(x), dtype="Int64"),
                    "substrate": None if kind == "noise" else self.substrate, "samples": n,
                    "normalize": self.normalize, "score": score}

        def rows() -> dict[str, pd.DataFrame]:
            table = pd.DataFrame(rows_of)
            table["infidelity"] = infd[:, 0].cpu().numpy()
            table["infidelity_random"] = infd[:, 1].cpu().numpy()
            table["infidelity_beta"] = beta[:, 0].cpu().numpy()
            for name, value in settings.items():
                table[f"infidelity_{name}"] = value
            return {"infidelity": table}
        return rows

    @classmethod
    def per_image(cls, tables) -> pd.DataFrame | None:
        rows = tables.get("infidelity")
        if rows is None:
            return None
        out = rows.set_index("image_id")[["infidelity", "infidelity_random"]].copy()
        out["infidelity_minus_random"] = out["infidelity"] - out["infidelity_random"]
        return out
