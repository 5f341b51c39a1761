"""One optimizer step over accumulated micro-batches, shared by the search loop and plain training."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn


def gradients_finite(parameters: Iterable[Tensor]) -> bool:
    """Whether every gradient present is finite (parameters without a gradient count as finite)."""
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in parameters)


class AccumulatedStep:
    """An optimizer step whose gradient is the mean over ``accumulation`` micro-batches.

    :meth:`backward` adds one micro-batch's share (its loss divided by ``accumulation``);
    :meth:`apply` ends the step: it clips the gradient norm (if ``grad_clip``), steps the
    optimizer (unless told to skip it), advances the learning-rate schedule and clears the gradients.
    """

    def __init__(
        self,
        parameters: Sequence[Tensor],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        accumulation: int = 1,
        grad_clip: float | None = None,
    ):
        self.parameters, self.optimizer, self.scheduler = list(parameters), optimizer, scheduler
        self.accumulation, self.grad_clip = accumulation, grad_clip
        self.micro_batches = 0  # micro-batches back-propagated since the last apply

    def backward(self, loss: Tensor, inputs: Sequence[Tensor] | None = None) -> None:
        """Back-propagate one micro-batch's share; ``inputs`` limits which tensors receive gradients."""
        (loss / self.accumulation).backward(inputs=inputs)
        self.micro_batches += 1

    def gradients_finite(self) -> bool:
        return gradients_finite(self.parameters)

    def apply(self, skip: bool = False) -> None:
        if not skip:
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.parameters, self.grad_clip)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.micro_batches = 0
