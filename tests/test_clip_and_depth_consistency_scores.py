"""R-precision on non-unit caption embeddings, caption normalisation, depth consistency definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hifa.evaluate import clip as clipm
from hifa.evaluate.consistency import depth_consistency, view_consistency


def test_r_precision_ranks_captions_by_cosine_not_dot_product():
    """A long caption embedding must not win on its length: the top-1 caption is by cosine similarity."""
    image = torch.tensor([[1.0, 0.2], [1.0, 0.25]], dtype=torch.float64)
    captions = torch.tensor([[1.0, 0.0], [3.0, 4.0]], dtype=torch.float64)  # cos 0.98 vs 0.75; dot 1.0 vs 3.8
    assert clipm.r_precision(image, captions, 0) == 1.0
    assert clipm.r_precision(image, captions, 1) == 0.0


def test_r_precision_matches_a_brute_force_cosine_ranking():
    """Random embeddings of arbitrary length: the fraction of views whose highest-cosine caption is the true one."""
    gen = np.random.default_rng(3)
    images = gen.normal(size=(40, 6)) * gen.uniform(0.1, 10.0, (40, 1))
    captions = gen.normal(size=(7, 6)) * gen.uniform(0.1, 10.0, (7, 1))
    for true_index in range(7):
        hits = 0
        for v in images:
            cos = [float(v @ c) / (np.linalg.norm(v) * np.linalg.norm(c)) for c in captions]
            hits += int(np.argmax(cos) == true_index)
        assert clipm.r_precision(torch.from_numpy(images), torch.from_numpy(captions), true_index) == pytest.approx(hits / 40)


def test_caption_normalisation_strips_both_ends():
    """Leading and trailing whitespace go, case is lowered, trailing periods/commas become one period."""
    assert clipm.normalise_caption("  A Dog on a Couch. ") == "a dog on a couch."
    texts, index = clipm.caption_set(" a ladybug", ["A Ladybug"], ["\ta corgi,"])
    assert texts == ["a ladybug.", "a corgi."] and index == 0


def lstsq_abs_rel(d: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(abs_rel, scale, shift) by numpy's least squares, independently of the module's closed form."""
    (s, t), *_ = np.linalg.lstsq(np.c_[y, np.ones_like(y)], d, rcond=None)
    return float(np.mean(np.abs(s * y + t - d) / d)), float(s), float(t)


def test_view_abs_rel_is_the_mean_relative_error_to_the_rendered_disparity():
    """abs_rel = mean_M |s y + t - d| / d with d = O / depth, against a numpy least-squares fit (skewed noise)."""
    gen = np.random.default_rng(5)
    z = gen.uniform(1.5, 4.0, (6, 6))
    opacity = gen.uniform(0.6, 1.0, (6, 6))
    d = 1.0 / z
    estimate = 2.0 * d + 0.3 + gen.exponential(0.05, (6, 6))  # skewed: mean and median differ
    result = view_consistency(opacity * z, opacity, estimate)
    expected, scale, shift = lstsq_abs_rel(d.ravel(), estimate.ravel())
    assert result["abs_rel"] == pytest.approx(expected, rel=1e-9)
    assert (result["scale"], result["shift"]) == pytest.approx((scale, shift), rel=1e-9)
    assert result["pixels"] == 36
    assert result["pearson"] == pytest.approx(np.corrcoef(d.ravel(), estimate.ravel())[0, 1], rel=1e-9)


def test_partial_opacity_divides_out_of_the_rendered_depth():
    """Rendered depth = O * z: with y = 1/z exactly, d = O / depth = 1/z, so the views agree (abs_rel 0, scale 1)."""
    gen = np.random.default_rng(6)
    z = gen.uniform(1.5, 4.0, (5, 5))
    opacity = gen.uniform(0.55, 1.0, (5, 5))
    result = view_consistency(opacity * z, opacity, 1.0 / z)
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert (result["scale"], result["shift"]) == pytest.approx((1.0, 0.0), abs=1e-9)


def test_mask_is_strictly_above_one_half_and_three_pixels_suffice():
    """M = {O > 0.5}: pixels at exactly 0.5 are out; a view with exactly 3 masked pixels is scored."""
    z = np.array([[2.0, 3.0, 4.0, 5.0]])
    opacity = np.array([[1.0, 1.0, 1.0, 0.5]])
    estimate = np.array([[0.5, 1 / 3, 0.25, 9.0]])  # affine in 1/z on M, way off at the excluded pixel
    result = view_consistency(z, opacity, estimate)
    assert result["pixels"] == 3
    assert result["abs_rel"] == pytest.approx(0.0, abs=1e-12) and result["pearson"] == pytest.approx(1.0)
    two = view_consistency(z, np.array([[1.0, 1.0, 0.5, 0.2]]), estimate)
    assert two["pixels"] == 2 and two["abs_rel"] is None


def test_suite_means_are_unweighted_over_views():
    """The means over views weigh every scored view alike, whatever its number of masked pixels."""
    gen = np.random.default_rng(8)
    z = gen.uniform(1.5, 4.0, (2, 8, 8))
    opacity = np.ones((2, 8, 8))
    opacity[1, 2:] = 0.0  # view 1: 16 masked pixels, view 0: 64
    estimate = 1.0 / z + gen.normal(0, 0.04, (2, 8, 8)) * np.array([0.2, 1.0])[:, None, None]
    result = depth_consistency(opacity * z, opacity, estimate)
    per_view = [v["abs_rel"] for v in result["per_view"]]
    assert [v["pixels"] for v in result["per_view"]] == [64, 16]
    assert abs(per_view[0] - per_view[1]) > 0.01
    assert result["abs_rel"] == pytest.approx((per_view[0] + per_view[1]) / 2)
    assert result["pearson"] == pytest.approx(np.mean([v["pearson"] for v in result["per_view"]]))
    assert result["views_scored"] == 2
