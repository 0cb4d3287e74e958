"""Fixtures of the CUDA tests: exact fp32 (no TF32) around each test, and a tiny hybrid DPT (tests/conftest.py has the
other tiny models)."""

import pytest
import torch

from tests.tinyworld import build_tiny_dpt


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 matmuls and convolutions without TF32 (cuDNN's default allows it), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def hybrid_dpt(tmp_path_factory):
    """A tiny DPT in the default depth model's hybrid layout (BiT stem under the ViT)."""
    return build_tiny_dpt(tmp_path_factory.mktemp("tiny-hybrid-dpt"), hybrid=True)
