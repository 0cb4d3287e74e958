"""Fixtures of the CUDA tests: exact fp32 (no TF32) around each test, and tiny real-world models on disk."""

import pytest
import torch

from tests.tinyworld import build_tiny_dpt, build_tiny_stable_diffusion


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 matmuls and convolutions without TF32 (cuDNN's default allows it), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_stable_diffusion(root / "sd"), build_tiny_dpt(root / "dpt")


@pytest.fixture(scope="module")
def hybrid_dpt(tmp_path_factory):
    """A tiny DPT in the default depth model's hybrid layout (BiT stem under the ViT)."""
    return build_tiny_dpt(tmp_path_factory.mktemp("tiny-hybrid-dpt"), hybrid=True)
