"""Adam on selected rows (the devices' private user embeddings), written out so that it vectorizes."""

from __future__ import annotations

import torch


def adam_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> None:
    """In-place Adam on rows whose step counts may differ (one count per client row).

    ``step`` has one entry per row and is already incremented.  The same formula as torch.optim.Adam,
    written out because each client keeps its own optimizer state on its device.
    """
    beta1, beta2 = betas
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step = step.to(param.dtype).unsqueeze(-1)
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    denom = (exp_avg_sq / bias2).sqrt().add_(eps)
    param.sub_(lr * (exp_avg / bias1) / denom)
