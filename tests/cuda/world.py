"""What the CUDA tests share besides fixtures: a tiny training config on CUDA, and the skip mark without a GPU."""

import pytest
import torch

from hifa.training import resolve_config

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny_cuda_config(models, method="hifa", extra=()):
    sd, dpt = models
    overrides = [
        "iterations=6", "resolution=32", "renderer.num_coarse=16", "renderer.num_fine=8", "checkpoint_every=3", "val_every=3",
        "val_views=1", "val_resolution=16", f"depth.model={dpt}", "tracking.enabled=false", "field.grid.n_levels=4",
        "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64", "device=cuda", "log_every=1", *extra,
    ]
    return resolve_config(method, "a corgi", f"stable-diffusion:{sd}", overrides=overrides)
