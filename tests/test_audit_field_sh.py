"""sh_encode against real spherical harmonics built from scipy's complex Y_l^m, term by term, signs included."""

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y

from hifa.sh import sh_encode


def reference_basis(d, degree):
    """(N, degree**2) real SH from scipy's complex Y_l^m (Condon-Shortley phase included).

    Bands 1 and 2 follow tiny-cuda-nn: sqrt(2) Re Y_l^m for m > 0, sqrt(2) Im Y_l^|m| for m < 0.
    Band 3 is the one sh.py documents as differing from tiny-cuda-nn in terms 9, 11, 13 and 15 (odd m):
    there the odd-m terms take the opposite sign.
    """
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    polar, azimuth = np.arccos(np.clip(z, -1, 1)), np.arctan2(y, x)
    cols = []
    for l in range(degree):
        for m in range(-l, l + 1):
            y_lm = sph_harm_y(l, abs(m), polar, azimuth)
            if m == 0:
                value = y_lm.real
            elif m > 0:
                value = math.sqrt(2) * y_lm.real
            else:
                value = math.sqrt(2) * y_lm.imag
            if l == 3 and m % 2:
                value = -value
            cols.append(value)
    return np.stack(cols, -1)


def directions(n=64, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d = np.concatenate([d, np.eye(3), -np.eye(3), [[1.0, 2.0, 2.0]], [[0.6, -0.8, 0.0]]])
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_every_term_matches_the_reference_harmonic(degree):
    d = directions()
    got = sh_encode(torch.tensor(d, dtype=torch.float64), degree).numpy()
    assert got.shape == (len(d), degree**2)
    np.testing.assert_allclose(got, reference_basis(d, degree), atol=1e-12)


def test_hand_values_on_the_axes():
    """At +y: Y00 = 1/(2 sqrt(pi)); band 1 = sqrt(3/(4 pi)) * (-y, z, -x); band 2's z^2 term = -sqrt(5/(16 pi))."""
    got = sh_encode(torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), 3)[0].tolist()
    c0, c1 = 1 / (2 * math.sqrt(math.pi)), math.sqrt(3 / (4 * math.pi))
    c20, c22 = math.sqrt(5 / (16 * math.pi)), math.sqrt(15 / (16 * math.pi))
    expected = [c0, -c1, 0.0, 0.0, 0.0, 0.0, -c20, 0.0, -c22]  # (x^2 - y^2) = -1 at +y
    assert got == pytest.approx(expected, abs=1e-12)
    got_x = sh_encode(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), 2)[0].tolist()
    assert got_x == pytest.approx([c0, 0.0, 0.0, -c1], abs=1e-12)


@pytest.mark.parametrize("degree", [0, 5, -1])
def test_degrees_outside_one_to_four_are_refused(degree):
    with pytest.raises(ValueError, match="SH degree"):
        sh_encode(torch.tensor([[0.0, 0.0, 1.0]]), degree)
