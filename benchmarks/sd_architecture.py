"""Full-size random checkpoints in the real layouts: Stable Diffusion 2.1-base and DPT-Hybrid (MiDaS).

Step cost does not depend on weight values, so these stand in for the real checkpoints in
speed benchmarks on machines that cannot download them. They load through the same
diffusers/transformers loaders as the real ones (`--prior stable-diffusion:<folder>`).
"""

from __future__ import annotations

from pathlib import Path

import torch


# SD 2.1-base's networks (the text encoder is OpenCLIP-H's, of which SD uses 23 of 24 layers).
TEXT_ENCODER = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                    max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)
UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True)


def build_sd21_base(folder: Path, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """SD 2.1-base: OpenCLIP-H text encoder (23 layers, 1024 wide), SD VAE, 865M-parameter UNet."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from tests.tinyworld import clip_bpe_files

    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(seed)
    vocab_file, merges_file = clip_bpe_files(folder / "_bpe")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), pad_token="!", model_max_length=77)
    tokenizer.save_pretrained(folder / "tokenizer")
    CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER)).to(dtype).save_pretrained(folder / "text_encoder")
    AutoencoderKL(**VAE).to(dtype).save_pretrained(folder / "vae")
    UNet2DConditionModel(**UNET).to(dtype).save_pretrained(folder / "unet")
    DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    ).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline", "_note": "random weights"}\n')
    return folder


def dpt_hybrid_config():
    """The architecture of Intel/dpt-hybrid-midas, the default depth model: a BiT ResNet stem (3, 4, 9 bottleneck
    blocks, weight-standardised convolutions) under a ViT-B/16 at 384x384, 123 M parameters."""
    from transformers import DPTConfig

    return DPTConfig(image_size=384, is_hybrid=True, neck_hidden_sizes=[256, 512, 768, 768], backbone_featmap_shape=[1, 1024, 24, 24],
                     reassemble_factors=[1, 1, 1, 0.5], readout_type="project")


def build_dpt_hybrid(folder: Path, dtype: torch.dtype = torch.float16, seed: int = 0) -> Path:
    """DPT-Hybrid at 384x384 with random weights, and its image processor."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(seed)
    DPTForDepthEstimation(dpt_hybrid_config()).to(dtype).save_pretrained(folder)
    DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder
