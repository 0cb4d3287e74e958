"""Background: a small MLP on a frequency encoding of the ray direction (method.md §2)."""

from __future__ import annotations

import torch
from torch import nn


def frequency_encode(x: torch.Tensor, octaves: int) -> torch.Tensor:
    """[x, sin(2^k x), cos(2^k x)] for k < octaves: (N, 3 + 6 * octaves)."""
    scales = 2.0 ** torch.arange(octaves, device=x.device, dtype=x.dtype)
    angles = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class BackgroundMLP(nn.Module):
    """Colour of the environment seen along an (unnormalised) ray direction."""

    def __init__(self, octaves: int = 4, hidden: int = 16):
        super().__init__()
        self.octaves = octaves
        self.net = nn.Sequential(nn.Linear(3 + 6 * octaves, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, directions: torch.Tensor) -> torch.Tensor:
        """(N, 3) directions -> (N, 3) colours in [0, 1]."""
        return torch.sigmoid(self.net(frequency_encode(directions, self.octaves)))
