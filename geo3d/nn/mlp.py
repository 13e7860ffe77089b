"""A fully connected network for coordinate fields, with skip connections and the geometric
initialisation of SAL / IGR.

Geometric initialisation (Atzmon & Lipman, SAL, 2020; used by IGR, NeuS, VolSDF) sets the weights
so that at initialisation the network's first output approximates the signed distance of a sphere
of radius ``r`` centred at the origin, ``f(x) ~ |x| - r``: hidden layers ``N(0, 2 / out)``, the last
layer ``N(sqrt(pi) / sqrt(in), 1e-4)`` with bias ``-r``. When the input is an encoding of the
coordinates (``[x, features(x)]``), only the first ``coordinate_dims`` input columns keep weights in
the first layer (and in skip layers); the others start at zero, so the encoding starts "switched
off" and the network is the sphere SDF of its coordinates. With ``"relu"`` the init is ``|x| - r``
in expectation over the random weights (a finite width leaves ~10 % of ``|x|`` of noise). With
``"softplus"`` (beta 100) each unit adds up to ``log(2) / beta`` where a ReLU gives 0, so the output
bias is re-centred to make ``f(0) = -r`` exactly; the slope is then below 1 (~0.55 for unit-scale
inputs, measured) but the function is radial and negative at the centre, which is what fitting needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = ("relu", "softplus")


class MLP(nn.Module):
    """``num_layers`` hidden layers of width ``hidden_dim`` and a linear output layer.

    Args:
        in_dim: input features.
        hidden_dim: width of every hidden layer.
        num_layers: number of hidden layers (>= 1); the network has ``num_layers + 1`` linear layers.
        out_dim: output features.
        activation: ``"relu"`` or ``"softplus"`` (beta 100, IGR's smooth ReLU: SDF gradients vary
            continuously, which the eikonal term and the normals need).
        skip_connections: hidden-layer indices ``l`` (``1 <= l < num_layers``) whose input is the
            previous activation concatenated with the network input, scaled by ``1 / sqrt(2)`` (DeepSDF).
        geometric_init: initialise so that output 0 approximates ``|x| - geometric_init_radius`` of
            the first ``coordinate_dims`` inputs (module docstring); other outputs keep the default init.
        geometric_init_radius: radius ``r`` of that sphere (input units).
        coordinate_dims: how many leading input columns are the raw coordinates (geometric init only).

    ``forward(x [..., in_dim]) -> [..., out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_layers: int, out_dim: int, activation: str = "relu",
                 skip_connections: Sequence[int] = (), geometric_init: bool = False,
                 geometric_init_radius: float = 0.5, coordinate_dims: int = 3) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("num_layers", num_layers),
                            ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        skips = tuple(sorted(set(int(s) for s in skip_connections)))
        if any(not 1 <= s < num_layers for s in skips):
            raise ValueError(f"skip_connections must lie in [1, {num_layers}), got {list(skip_connections)}")
        if geometric_init:
            if not (math.isfinite(geometric_init_radius) and geometric_init_radius > 0):
                raise ValueError(f"geometric_init_radius must be > 0, got {geometric_init_radius!r}")
            if not 1 <= coordinate_dims <= in_dim:
                raise ValueError(f"coordinate_dims must lie in [1, in_dim={in_dim}], got {coordinate_dims!r}")
        self.in_dim, self.hidden_dim, self.num_layers, self.out_dim = in_dim, hidden_dim, num_layers, out_dim
        self.activation_name = activation
        self.skip_connections = skips
        layers = []
        for layer in range(num_layers + 1):
            fan_in = in_dim if layer == 0 else hidden_dim
            if layer in skips:
                fan_in += in_dim
            layers.append(nn.Linear(fan_in, hidden_dim if layer < num_layers else out_dim))
        self.layers = nn.ModuleList(layers)
        self.activation = nn.ReLU() if activation == "relu" else nn.Softplus(beta=100.0)
        if geometric_init:
            self._geometric_init(geometric_init_radius, coordinate_dims)

    @torch.no_grad()
    def _geometric_init(self, radius: float, coordinate_dims: int) -> None:
        for index, layer in enumerate(self.layers):
            if index == self.num_layers:  # output layer: output 0 ~ |h| scaled, minus r
                fan_in = layer.weight.shape[1]
                layer.weight[0].normal_(math.sqrt(math.pi) / math.sqrt(fan_in), 1e-4)
                layer.bias[0] = -radius
                continue
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(layer.weight.shape[0]))
            nn.init.zeros_(layer.bias)
            if index == 0:
                layer.weight[:, coordinate_dims:] = 0.0
            elif index in self.skip_connections:  # the re-injected input sits in the last in_dim columns
                layer.weight[:, self.hidden_dim + coordinate_dims:] = 0.0
        # softplus adds ~log(2)/beta per unit where ReLU gives 0: re-centre so that f(0) = -r exactly
        output = self.layers[-1]
        output.bias[0] -= self(torch.zeros(self.in_dim))[0] + radius

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"MLP input must have shape [..., {self.in_dim}], got {list(x.shape)}")
        h = x
        for index, layer in enumerate(self.layers):
            if index in self.skip_connections:
                h = torch.cat((h, x), dim=-1) / math.sqrt(2.0)
            h = layer(h)
            if index < self.num_layers:
                h = self.activation(h)
        return h

    def extra_repr(self) -> str:
        return f"activation={self.activation_name!r}, skip_connections={self.skip_connections}"
