"""Host-to-device copies: values and devices (the sync-free path itself needs CUDA: tests/cuda/)."""

import torch

from hifa.transfer import to_device


def test_to_device_on_the_cpu_returns_the_same_values_on_the_same_device():
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    y = to_device(x, "cpu")
    assert y.device.type == "cpu" and torch.equal(x, y)
