"""Tiny world: a tiny random Stable Diffusion checkpoint saved to disk in the real layout.

Everything is random (images mean nothing) but it loads through the same diffusers /
transformers loaders as a real checkpoint, offline.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch


def clip_bpe_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt for a CLIPTokenizer, built from the BPE file clip-anytorch ships."""
    import clip.simple_tokenizer as simple

    bpe_path = Path(simple.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(m.split()) for m in merges]
    vocab = list(simple.bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(p) for p in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(p) for p in pairs) + "\n")
    return vocab_file, merges_file


def build_tiny_stable_diffusion(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save tokenizer, text encoder, VAE, UNet and scheduler under `folder` (about 4 MB)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    vocab_file, merges_file = clip_bpe_files(folder / "_bpe")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="<|endoftext|>", model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModel(text_config).save_pretrained(folder / "text_encoder")
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32), norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"), up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        sample_size=32,
    ).save_pretrained(folder / "vae")
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64), norm_num_groups=16,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    ).save_pretrained(folder / "unet")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    ).save_pretrained(folder / "scheduler")
    return folder


def build_tiny_dpt(folder: Path, seed: int = 0, hybrid: bool = False) -> Path:
    """A tiny random DPT depth model with its image processor, saved like a real checkpoint.

    hybrid: the layout of the default depth model, Intel/dpt-hybrid-midas: a BiT ResNet stem (weight-standardised
    convolutions) whose first two stages feed the first two reassemble stages, under the ViT.
    """
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    vit = dict(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=32, fusion_hidden_size=16)
    if hybrid:
        stem = BitConfig(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64], embedding_size=8,
                         num_groups=4, out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True)
        config = DPTConfig(**vit, is_hybrid=True, backbone_config=stem, patch_size=16, neck_hidden_sizes=[16, 32, 16, 16],
                           backbone_out_indices=[0, 1, 2, 3], backbone_featmap_shape=[1, 64, 2, 2], reassemble_factors=[1, 1, 1, 0.5],
                           readout_type="project")
    else:
        config = DPTConfig(**vit, patch_size=8, neck_hidden_sizes=[8, 8, 16, 16], backbone_out_indices=[0, 1, 2, 3])
    torch.manual_seed(seed)
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
