"""Small fully connected networks (plain torch, so second derivatives always work)."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``in_dim -> [hidden] * n_hidden -> out_dim`` with ReLU between layers.

    Args:
        in_dim, out_dim: input / output widths.
        hidden: hidden width; n_hidden: number of hidden layers (0 = one linear layer).
        zero_init_last: start the last layer at zero (the kinematic field starts motionless).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, n_hidden: int = 1, zero_init_last: bool = False):
        super().__init__()
        dims = [in_dim] + [hidden] * n_hidden + [out_dim]
        layers = []
        for i in range(len(dims) - 1):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)
        if zero_init_last:
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_dim] -> [N, out_dim]``."""
        return self.net(x)
