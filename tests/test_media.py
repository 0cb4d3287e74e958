"""Labelled contact sheets: the margin names each row and leaves the pictures as they were."""

import numpy as np
import torch

from hifa.media import contact_sheet, label_rows


def test_label_rows_adds_a_margin_with_one_label_per_row():
    image = torch.rand(2 * 40, 120, 3)
    labelled = label_rows(image, ["ground truth", "render"])
    margin = labelled.shape[1] - 120
    assert labelled.shape[0] == 80 and 20 < margin < 120
    assert torch.equal(labelled[:, margin:], image)  # pictures untouched
    strip = labelled[:, :margin].numpy()
    for row in range(2):  # dark text in each row's band, white elsewhere
        band = strip[row * 40 : (row + 1) * 40]
        assert (band < 0.5).any() and np.median(band) == 1.0
    wider = label_rows(image, ["a much longer row label", "x"])
    assert wider.shape[1] > labelled.shape[1]


def test_contact_sheet_labels_are_optional():
    rows = [torch.rand(5, 16, 16, 3), torch.rand(5, 16, 16, 3)]
    plain = contact_sheet(rows, columns=4)
    assert plain.shape == (32, 64, 3)
    named = contact_sheet(rows, columns=4, labels=["RGB", "depth"])
    assert named.shape[0] == 32 and torch.equal(named[:, -64:], plain)
