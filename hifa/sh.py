"""Real spherical-harmonics basis of unit directions, degrees 1..4 (1, 4, 9 or 16 terms)."""

from __future__ import annotations

import torch


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """SH basis values (N, degree**2) of unit directions d (N, 3)."""
    if not 1 <= degree <= 4:
        raise ValueError(f"SH degree must lie in [1, 4], got {degree}")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        # tiny-cuda-nn gives terms 9, 11, 13 and 15 the opposite sign: either is an orthonormal basis and
        # the colour layer after it learns both, but a checkpoint holds weights for this convention.
        out += [
            0.59004358992664352 * y * (3 * xx - yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (5 * zz - 1),
            0.3731763325901154 * z * (5 * zz - 3),
            0.45704579946446572 * x * (5 * zz - 1),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)
