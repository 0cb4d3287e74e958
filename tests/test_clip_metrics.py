"""CLIP score and R-precision: the math on known embeddings, the caption set, the real loader on a tiny CLIP, errors."""

import copy
import json
import math

import jsonschema
import pytest
import torch

from hifa.errors import HifaError
from hifa.evaluate import clip as clipm
from hifa.steps.evaluate import SCHEMA_FILE, captions_file
from tests.tinyclip import build_tiny_clip


def unit(*values):
    v = torch.tensor(values, dtype=torch.float64)
    return v / v.norm()


def test_clip_score_is_100_cos_averaged_over_views_with_its_standard_error():
    text = unit(1, 0, 0)
    images = torch.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 1, 0), unit(-1, 0, 0)])
    scores = torch.tensor([100.0, 0.0, 100 / math.sqrt(2), -100.0], dtype=torch.float64)
    result = clipm.clip_score(images * 3.0, text[None] * 0.5)  # embeddings need not be unit length
    assert result["mean"] == pytest.approx(float(scores.mean()))
    assert result["se"] == pytest.approx(float(scores.std(unbiased=True)) / 2.0)
    assert clipm.clip_score(images[:1], text)["se"] is None


def test_r_precision_counts_views_whose_top_caption_is_the_prompt():
    captions = torch.eye(5, 8, dtype=torch.float64)  # orthonormal captions
    picks = [0, 0, 2, 3, 0, 4, 1, 0]  # each view looks exactly like one caption
    images = captions[picks] + 0.01 * torch.randn(len(picks), 8, dtype=torch.float64)
    assert clipm.r_precision(images, captions, 0) == pytest.approx(4 / 8)
    assert clipm.r_precision(images, captions, 4) == pytest.approx(1 / 8)
    assert clipm.r_precision(images, captions, 2) == pytest.approx(1 / 8)


def test_caption_set_normalises_deduplicates_and_adds_the_prompt():
    captions = ["a dog on a couch.", "A ladybug.", "two cats ."]
    texts, index = clipm.caption_set("a ladybug", ["A Ladybug", "a corgi"], captions)
    assert texts == ["a ladybug.", "a corgi.", "a dog on a couch.", "two cats."] and index == 0
    texts, index = clipm.caption_set("a blue tulip", [], captions)
    assert texts[-1] == "a blue tulip." and index == 3 and len(texts) == 4


def test_shipped_caption_set_has_153_normalised_captions():
    lines = clipm.read_lines(captions_file(None), "caption")
    assert len(lines) == 153 and all(line == clipm.normalise_caption(line) for line in lines)
    texts, index = clipm.caption_set("a ladybug", [], lines)
    assert len(texts) == 154 and texts[index] == "a ladybug."


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    return path, build_tiny_clip(path)


def test_tiny_clip_loads_through_clip_load_with_the_same_weights(tiny_clip, tmp_path):
    path, original = tiny_clip
    model, preprocess = clipm.load_clip(str(path), "cpu")
    tokens = __import__("clip").tokenize(["a green torus", "a red ball on a blue box"])
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens), original.encode_text(tokens), atol=1e-5)
    from PIL import Image

    for i, colour in enumerate([(255, 0, 0), (0, 128, 255)]):
        Image.new("RGB", (48, 48), colour).save(tmp_path / f"{i}.png")
    images = clipm.encode_images(model, preprocess, [tmp_path / "0.png", tmp_path / "1.png"], "cpu")
    texts = clipm.encode_texts(model, ["a green torus", "x " * 200], "cpu")  # the long text is truncated, not an error
    assert images.shape == (2, 16) and texts.shape == (2, 16)
    assert torch.allclose(images.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(images[0], images[1])


def test_missing_clip_weights_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HIFA_CLIP_DIR", str(tmp_path / "clip"))
    with pytest.raises(HifaError) as info:
        clipm.load_clip("ViT-B/32", "cpu")
    message = str(info.value)
    assert "\n" not in message and "CLIP model 'ViT-B/32' is not available offline" in message
    assert str(tmp_path / "clip" / "ViT-B-32.pt") in message and "clip.load('ViT-B/32'" in message and "--clip-models none" in message


def test_the_cli_error_for_missing_clip_weights_is_its_only_output(tmp_path):
    """clip-anytorch's pkg_resources warning used to come first, making the one-line error three lines."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HIFA_CLIP_DIR": str(tmp_path / "clip"), "PYTHONWARNINGS": "default"}
    code = "from hifa.evaluate.clip import load_clip; load_clip('ViT-B/32', 'cpu')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "pkg_resources" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("hifa.errors.HifaError: CLIP model 'ViT-B/32' is not available offline")


def test_unknown_or_broken_clip_models_are_errors(tmp_path):
    with pytest.raises(HifaError, match="unknown CLIP model 'ViT-X/99'"):
        clipm.load_clip("ViT-X/99", "cpu", tmp_path)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(HifaError, match="cannot load CLIP checkpoint"):
        clipm.load_clip(str(broken), "cpu")


def sample_metrics() -> dict:
    backbone = {
        "clip_score": {"mean": 27.5, "se": 0.4, "definition": "d"},
        "r_precision": {"colour": 0.75, "textureless": 0.5, "captions": 154, "definition": "d"},
    }
    return {
        "schema": "hifa.metrics/1", "prompt": "a ladybug", "method": "hifa", "prior": "stable-diffusion", "step": 10000,
        "views": 100, "resolution": 512, "clip": {"ViT-B/32": backbone}, "groundtruth": None, "depth_consistency": None,
        "versions": {"hifa": "0.1.0", "torch": "2.14.1", "clip-anytorch": "2.6.0"},
        "model_ids": {"prior": "stabilityai/stable-diffusion-2-1-base", "clip": {"ViT-B/32": "ViT-B/32"}, "depth": None},
        "notes": [],
    }


def test_metrics_schema_accepts_a_valid_document_and_rejects_bad_ones():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(sample_metrics(), schema)
    bad_fraction = copy.deepcopy(sample_metrics())
    bad_fraction["clip"]["ViT-B/32"]["r_precision"]["colour"] = 1.5
    missing = sample_metrics()
    del missing["versions"]["clip-anytorch"]
    bad_truth = sample_metrics()
    bad_truth["groundtruth"] = {"psnr": 20.0, "ssim": 0.8, "depth_mae": 0.1, "chamfer": 0.01, "fscore": 0.9}  # no tau
    for document in (bad_fraction, missing, bad_truth):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(document, schema)
