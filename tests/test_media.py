"""Labelled contact sheets: the margin names each row and leaves the pictures as they were."""

import numpy as np
import torch

from hifa.media import contact_sheet, label_rows, mp4_boxes, write_mp4


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


def test_a_finished_mp4_has_its_index_and_a_cut_off_copy_is_refused(tmp_path):
    """mp4_boxes lists ftyp, moov and mdat for ffmpeg's file, and nothing for the same bytes cut short."""
    frames = [np.full((16, 16, 3), i / 4, dtype=np.float32) for i in range(4)]
    video = write_mp4(frames, tmp_path / "t.mp4", fps=4)
    assert {b"ftyp", b"moov", b"mdat"} <= set(mp4_boxes(video))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[:-9])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert mp4_boxes(cut) == [] and mp4_boxes(empty) == []
