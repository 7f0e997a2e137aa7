"""What is explained and tracked (DEFINITIONS §1): target class c and the score f_c."""

from __future__ import annotations

import torch

SCORES = ("logit", "softmax", "log_softmax")
TARGETS = ("predicted", "label")


def score_of(logits: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """f_c(x): the pre-softmax logit by default, or its softmax / log-softmax probability."""
    logits = logits.float()
    if score == "softmax":
        logits = logits.softmax(-1)
    elif score == "log_softmax":
        logits = logits.log_softmax(-1)
    return logits.gather(1, target.view(-1, 1)).squeeze(1)


def choose_target(logits: torch.Tensor, labels: torch.Tensor, target: str) -> torch.Tensor:
    return logits.argmax(1) if target == "predicted" else labels.to(logits.device)
