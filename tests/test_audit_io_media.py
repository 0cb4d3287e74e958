"""Audit of hifa/io.py, hifa/media.py and hifa/transfer.py: failed atomic writes, folder checks, stale temporaries,
image and JSON encodings, depth colouring and normalising, contact sheets, row labels, turntable files, and
host-to-device copies to a device other than CUDA."""

import errno
import os
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from hifa import io as hio
from hifa import media
from hifa.errors import HifaError, OutputError
from hifa.transfer import to_device


def failing_replace(monkeypatch, error):
    def replace(*args):
        raise error

    monkeypatch.setattr(hio.os, "replace", replace)


def temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


def test_a_failed_write_keeps_the_previous_file_and_is_one_line_with_its_errno(tmp_path, monkeypatch):
    """A full disk: the old bytes stay, the temporary goes, and the message gives the size, reason and a hint."""
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    failing_replace(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OutputError) as info:
        hio.write_bytes_atomic(target, bytes(2_500_000))
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"cannot write {target} (2.5 MB): No space left on device; the previous file is intact "
                               "(free some space and run the command again)")
    assert target.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_a_failed_first_write_says_nothing_was_written_and_a_quota_gets_the_same_hint(tmp_path, monkeypatch):
    """EDQUOT is a full disk too; with no earlier file the message says nothing was written."""
    target = tmp_path / "run" / "weights.pt"
    failing_replace(monkeypatch, OSError(errno.EDQUOT, "Disk quota exceeded"))
    with pytest.raises(OutputError) as info:
        hio.write_bytes_atomic(target, b"x" * 1000)
    assert str(info.value) == (f"cannot write {target} (0.0 MB): Disk quota exceeded; nothing was written "
                               "(free some space and run the command again)")
    assert not target.exists() and temporaries(target.parent) == []


def test_a_refused_write_without_a_reason_names_the_error_class_and_no_hint(tmp_path, monkeypatch):
    """No strerror: the exception's class stands in; no hint about space for a permission problem."""
    failing_replace(monkeypatch, PermissionError())
    with pytest.raises(OutputError) as info:
        hio.write_bytes_atomic(tmp_path / "a.json", b"{}")
    assert str(info.value) == f"cannot write {tmp_path / 'a.json'} (0.0 MB): PermissionError; nothing was written"
    assert info.value.errno is None


def test_a_fifo_is_no_folder_to_write_into_and_the_option_is_named(tmp_path):
    """Anything that exists and is not a folder (here a named pipe) is refused, in the caller's option's words."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(HifaError, match=f"^--results {pipe} is a file, not a folder$"):
        hio.check_folder_path(pipe, "--results")
    with pytest.raises(HifaError, match=f"^--results {pipe / 'x'}: {pipe} is a file, not a folder$"):
        hio.check_folder_path(pipe / "x", "--results")


def test_output_folder_makes_missing_parents(tmp_path):
    """A nested output folder is made with all its parents."""
    made = hio.output_folder(tmp_path / "a" / "b" / "c")
    assert made == tmp_path / "a" / "b" / "c" and made.is_dir()


def test_stale_temporaries_are_the_hidden_tmp_files_only(tmp_path):
    """Hidden `.NAME.XXXX.tmp` files go (in subfolders only when recursive); other files and folders stay."""
    for name in (".checkpoint.pt.k3j9.tmp", "notes.tmp", "weights.pt", "render/.render.json.ab.tmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / ".folder.tmp").mkdir()
    assert hio.remove_stale_temporaries(tmp_path, recursive=False) == [tmp_path / ".checkpoint.pt.k3j9.tmp"]
    assert (tmp_path / "render" / ".render.json.ab.tmp").exists()
    assert hio.remove_stale_temporaries(tmp_path) == [tmp_path / "render" / ".render.json.ab.tmp"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".folder.tmp", "notes.tmp", "render", "weights.pt"]
    assert hio.remove_stale_temporaries(tmp_path / "nowhere") == []


def test_json_is_written_with_sorted_keys_two_space_indent_a_final_newline_and_paths_as_text(tmp_path):
    """The exact bytes of a small record."""
    path = hio.write_json_atomic(tmp_path / "r.json", {"b": 1, "a": Path("/x/y")})
    assert path.read_text() == '{\n  "a": "/x/y",\n  "b": 1\n}\n'


def test_to_uint8_rounds_to_nearest_and_clamps():
    """0.999 is 255 (not truncated to 254); out-of-range floats clamp; uint8 and tensors pass through."""
    values = np.array([[0.0, 0.2, 0.5, 0.999, 1.0, -0.5, 2.0]], dtype=np.float32)
    assert hio.to_uint8(values).tolist() == [[0, 51, 128, 255, 255, 0, 255]]
    assert hio.to_uint8(torch.tensor([0.999, 3.0])).tolist() == [255, 255]
    raw = np.array([7, 250], dtype=np.uint8)
    assert hio.to_uint8(raw) is raw


def test_save_image_picks_the_format_from_the_suffix_and_png_without_one(tmp_path):
    """.jpg writes a JPEG; a name without a suffix a PNG; the pixels read back."""
    image = np.full((4, 6, 3), 0.2, dtype=np.float32)
    jpeg = hio.save_image(image, tmp_path / "view.jpg")
    assert jpeg.read_bytes()[:3] == b"\xff\xd8\xff"
    plain = hio.save_image(image, tmp_path / "view")
    assert plain.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(np.asarray(Image.open(plain)), np.full((4, 6, 3), 51, dtype=np.uint8))


def test_load_image_is_rgb_in_0_1_even_for_rgba_and_grey(tmp_path):
    """An RGBA and a grey PNG load as (H, W, 3) float32, 51 as exactly 0.2 and 255 as 1."""
    Image.fromarray(np.array([[[51, 255, 0, 10]]], dtype=np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.array([[255]], dtype=np.uint8), "L").save(tmp_path / "grey.png")
    rgba = hio.load_image(tmp_path / "rgba.png")
    assert rgba.shape == (1, 1, 3) and rgba.dtype == np.float32
    assert rgba.tolist() == [[[np.float32(0.2), 1.0, 0.0]]]
    assert hio.load_image(tmp_path / "grey.png").tolist() == [[[1.0, 1.0, 1.0]]]


def test_colorize_uses_turbo_and_white_where_the_mask_is_at_most_one_half():
    """turbo's published end colours; mask values of 0.5 and below are background (white by default)."""
    rgb = media.colorize(np.array([[0.0, 1.0, 0.3]]), mask=np.array([[1.0, 0.51, 0.5]]))
    assert rgb.dtype == np.float32 and rgb.shape == (1, 3, 3)
    np.testing.assert_allclose(rgb[0, 0], [0.18995, 0.07176, 0.23217], atol=1e-4)
    np.testing.assert_allclose(rgb[0, 1], [0.4796, 0.01583, 0.01055], atol=1e-4)
    assert rgb[0, 2].tolist() == [1.0, 1.0, 1.0]
    assert media.colorize(np.zeros((1, 1)), np.zeros((1, 1)), background=0.25)[0, 0].tolist() == [0.25] * 3


def test_normalise_maps_the_masked_range_to_0_1():
    """The range is over the mask only, returned as (lo, hi); a given range is used as it is."""
    values = np.array([[0.0, 10.0], [2.0, 4.0]])
    mask = np.array([[0.0, 1.0], [1.0, 0.6]])
    scaled, span = media.normalise(values, mask)
    assert span == (2.0, 10.0)
    np.testing.assert_allclose(scaled, [[-0.25, 1.0], [0.0, 0.25]])
    again, same = media.normalise(values, np.zeros((2, 2)), (0.0, 20.0))
    assert same == (0.0, 20.0)
    np.testing.assert_allclose(again, values / 20.0)


def test_normalise_of_an_empty_mask_or_a_flat_surface_stays_finite():
    """No pixel in the mask: range (0, 1); one depth everywhere: zeros, not NaN."""
    values = np.array([[0.5, 3.0]])
    scaled, span = media.normalise(values, np.zeros((1, 2)))
    assert span == (0.0, 1.0) and scaled.tolist() == [[0.5, 3.0]]
    flat, span = media.normalise(np.full((2, 2), 1.5), np.ones((2, 2)))
    assert span == (1.5, 1.5) and flat.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_planar_depth_divides_by_opacity_and_is_zero_where_nothing_was_hit():
    """sum w z / O: 1.0 / 0.5 = 2; opacity at or below 1e-6 gives 0."""
    depth = np.array([1.0, 0.0, 5e-7, 3.0])
    opacity = np.array([0.5, 0.0, 1e-6, 1.0])
    assert media.planar_depth(depth, opacity).tolist() == [2.0, 0.0, 0.0, 3.0]


def test_resize_image_keeps_the_aspect_ratio_and_averages_areas():
    """An 8x16 checkerboard of single pixels halved is 4x8 of 0.5 (area averaging, not picking pixels)."""
    board = ((torch.arange(8)[:, None] + torch.arange(16)[None, :]) % 2).float()[..., None].expand(8, 16, 3)
    half = media.resize_image(board, 4)
    assert half.shape == (4, 8, 3)
    assert torch.allclose(half, torch.full((4, 8, 3), 0.5))


def test_contact_sheet_spaces_its_columns_evenly_and_shrinks_to_the_thumbnail_height():
    """5 views in 3 columns are views 0, 2 and 4; a 16-pixel view with thumb=8 becomes 8x8."""
    views = torch.stack([torch.full((16, 16, 3), i / 10) for i in range(5)])
    sheet = media.contact_sheet([views], columns=3, thumb=8)
    assert sheet.shape == (8, 24, 3)
    assert [round(float(sheet[0, 8 * k, 0]), 6) for k in range(3)] == [0.0, 0.2, 0.4]
    every = media.contact_sheet([views], columns=9)
    assert every.shape == (16, 80, 3)
    assert [round(float(every[0, 16 * k, 0]), 6) for k in range(5)] == [0.0, 0.1, 0.2, 0.3, 0.4]


def ink_rows(labelled, width):
    strip = labelled[:, :width].numpy().min(axis=(1, 2))
    return np.nonzero(strip < 0.5)[0]


def test_row_labels_are_centred_in_their_row_and_grow_with_it_to_a_cap():
    """Each label's ink is centred on its row; tall rows get larger text than short ones."""
    short = media.label_rows(torch.ones(2 * 60, 10, 3), ["Ag", "Ag"])
    tall = media.label_rows(torch.ones(2 * 108, 10, 3), ["Ag", "Ag"])
    for image, row in ((short, 60), (tall, 108)):
        width = image.shape[1] - 10
        ink = ink_rows(image, width)
        for i in range(2):
            mine = ink[(ink >= i * row) & (ink < (i + 1) * row)]
            assert abs(mine.mean() - (i * row + row / 2)) < row / 8, (row, i, mine)
    first = {row: ink_rows(image, image.shape[1] - 10) for image, row in ((short, 60), (tall, 108))}
    height = {row: np.ptp(ink[ink < row]) for row, ink in first.items()}
    assert height[108] >= 1.5 * height[60], height


def test_an_odd_sized_turntable_is_an_mp4_of_even_size_at_25_fps(tmp_path):
    """libx264 needs even sizes: 9x7 frames are padded to 10x8; the default frame rate is 25."""
    frames = [np.full((9, 7, 3), v, dtype=np.float32) for v in (0.0, 0.5, 1.0)]
    path = media.write_turntable(frames, tmp_path / "deep" / "turntable.mp4")
    assert path == tmp_path / "deep" / "turntable.mp4"
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["size"] == (8, 10) and meta["fps"] == 25.0
    assert sum(1 for _ in reader) == 3


def test_without_ffmpeg_the_turntable_is_a_looping_gif_beside_it_and_no_temporary_is_left(tmp_path, monkeypatch):
    """The GIF is at the same stem, in a folder made for it, loops forever and shows each frame 1000/fps ms."""
    def broken(*args, **kwargs):
        raise RuntimeError("no ffmpeg here")

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", broken)
    frames = [np.full((4, 4, 3), v, dtype=np.float32) for v in (0.0, 1.0)]
    folder = tmp_path / "render" / "video"
    path = media.write_turntable(frames, folder / "turntable.mp4", fps=4)
    assert path == folder / "turntable.gif"
    assert sorted(p.name for p in folder.iterdir()) == ["turntable.gif"]
    with Image.open(path) as gif:
        assert gif.n_frames == 2 and gif.info["duration"] == 250 and gif.info["loop"] == 0


def test_an_ffmpeg_that_fails_after_reading_the_frames_falls_back_to_a_gif(tmp_path, monkeypatch):
    """An ffmpeg that consumes the frames and exits 1 (e.g. out of space) must not leave an empty .mp4 as the result."""
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\ncat > /dev/null\necho 'ffmpeg: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(imageio_ffmpeg._io, "get_ffmpeg_exe", lambda: str(fake))
    frames = [np.zeros((4, 4, 3), dtype=np.float32)] * 2
    path = media.write_turntable(frames, tmp_path / "turntable.mp4", fps=2)
    assert path == tmp_path / "turntable.gif" and not (tmp_path / "turntable.mp4").exists()


def test_stale_temporaries_of_a_json_write_are_found_by_the_cleaner(tmp_path, monkeypatch):
    """A write killed before its rename leaves a name the cleaner recognises."""
    failing_replace(monkeypatch, KeyboardInterrupt())
    monkeypatch.setattr(hio.Path, "unlink", lambda self, missing_ok=False: None)  # as if killed before cleaning up
    with pytest.raises(KeyboardInterrupt):
        hio.write_json_atomic(tmp_path / "summary.json", {"a": 1})
    monkeypatch.undo()
    left = temporaries(tmp_path)
    assert len(left) == 1 and left[0].startswith(".summary.json.")
    assert [p.name for p in hio.remove_stale_temporaries(tmp_path)] == left
    assert not (tmp_path / "summary.json").exists()


def test_to_device_moves_to_any_non_cuda_device_without_pinning():
    """A copy to the meta device (no CUDA, no pinned memory needed) lands there with its shape and dtype."""
    x = torch.arange(6, dtype=torch.float64).view(2, 3)
    moved = to_device(x, "meta")
    assert moved.device.type == "meta" and moved.shape == (2, 3) and moved.dtype == torch.float64
    assert to_device(x, torch.device("cpu")) is x
