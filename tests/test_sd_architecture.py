"""The benchmarks' random stand-ins have the real checkpoints' architectures (counted on the meta device: no memory)."""

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, DPTForDepthEstimation

from benchmarks.sd_architecture import TEXT_ENCODER, UNET, VAE, dpt_hybrid_config


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_stable_diffusion_2_1_base_networks_have_the_published_parameter_counts():
    with torch.device("meta"):
        assert parameters(UNet2DConditionModel(**UNET)) == 865_910_724
        assert parameters(AutoencoderKL(**VAE)) == 83_653_863
        assert parameters(CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER))) == 340_387_840


def test_the_depth_stand_in_is_dpt_hybrid_midas_sized():
    """Intel/dpt-hybrid-midas: 123 M parameters, a BiT ResNet stem under a ViT-B/16 (the default depth model)."""
    config = dpt_hybrid_config()
    assert config.is_hybrid and config.hidden_size == 768 and config.num_hidden_layers == 12
    assert list(config.backbone_config.depths) == [3, 4, 9]
    with torch.device("meta"):
        count = parameters(DPTForDepthEstimation(config))
    assert abs(count - 123e6) < 0.01 * 123e6, count
