"""Small fully connected networks (plain torch, so second derivatives always work)."""
from __future__ import annotations

import torch
from torch import nn


ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "silu": nn.SiLU, "softplus": lambda: nn.Softplus(beta=10.0)}


class MLP(nn.Module):
    """``in_dim -> [hidden] * n_hidden -> out_dim`` with an activation between layers.

    Args:
        in_dim, out_dim: input / output widths.
        hidden: hidden width; n_hidden: number of hidden layers (0 = one linear layer).
        zero_init_last: start the last layer at zero (the kinematic field starts motionless).
        activation: ``relu`` (default), ``silu`` or ``softplus``: smooth ones keep every unit alive and the
            field smooth for finite differences.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, n_hidden: int = 1, zero_init_last: bool = False,
                 activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        dims = [in_dim] + [hidden] * n_hidden + [out_dim]
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        if zero_init_last:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim] -> [N, out_dim]``."""
        return self.net(x)
