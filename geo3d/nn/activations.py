"""Activations of neural fields."""

from __future__ import annotations

import torch
from torch import Tensor


class TruncExp(torch.autograd.Function):
    """``exp(x)`` with the gradient of ``exp(min(x, 15))``: Instant-NGP's density activation (the forward is
    exact, the backward cannot overflow)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """:class:`TruncExp` applied to ``x`` (any shape)."""
    return TruncExp.apply(x)
