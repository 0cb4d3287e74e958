"""Tiny world: a tiny random CLIP (clip-anytorch's own model class) saved as a state dict that clip.load rebuilds."""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_clip(path: Path, seed: int = 0):
    """Save a ViT CLIP with 16-d embeddings, 32 px images and 64-wide one-layer towers (about 13 MB); return the model.

    Widths are 64 because clip.model.build_model infers heads as width // 64; the vocabulary and context must stay
    49408 and 77 for clip.tokenize.
    """
    from clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=16, image_resolution=32, vision_layers=1, vision_width=64, vision_patch_size=8,
        context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1, transformer_layers=1,
    ).eval()
    with torch.no_grad():  # fp16-representable weights, like the released checkpoints (clip.load rounds through fp16)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model
