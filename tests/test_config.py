"""Presets (method.md §7), config resolution, overrides and their errors."""

import pytest

from hifa.config import TrainConfig
from hifa.configio import apply_overrides, from_dict, to_dict
from hifa.errors import ConfigError, HifaError
from hifa.presets import PRESETS, preset
from hifa.training import resolve_config


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_hifa_preset_matches_the_method_table():
    c = preset("hifa")
    assert (c.iterations, c.resolution, c.renderer.num_coarse, c.renderer.num_fine) == (10000, 512, 128, 64)
    assert c.renderer.smoothing == "boxcar" and c.field.kind == "hifa" and c.shading == "albedo"
    g = c.guidance
    assert (g.method, g.guidance_scale, g.view_mode, g.schedule, g.min_percent) == ("hifa", 100.0, "perpneg", "sqrt", 0.2)
    assert (g.denoising_steps, g.denoise_mode, g.eta, g.lambda_latent, g.lambda_rgb, g.omega) == (4, "ddim", 1.0, 1.0, 0.1, 0.05)
    r = c.regularisers
    assert (r.zvar, r.z_entropy, r.monotonicity, r.opacity_entropy, r.sample_entropy, r.orientation) == (3.0, 1e-2, 1.0, 1e-4, 0.0, 0.0)
    assert c.depth.weight == 0.1 and c.optim.lr == 5e-3 and c.optim.grid_lr_scale == 10 and c.optim.warmup_steps == 500
    assert c.optim.grad_clip == 1.0 and c.optim.ema_decay is None and c.cameras.uniform_sphere_rate == 0.5
    assert c.mesh.threshold == 37.5 and c.seed == 0
    assert c.renderer.occupancy.resolution == 0  # dense renders, as the reference's HiFA; the grid is a speed knob


def test_dreamfusion_preset_matches_the_method_table():
    c = preset("dreamfusion")
    assert (c.resolution, c.renderer.num_coarse, c.renderer.num_fine, c.renderer.smoothing) == (64, 64, 32, "naive")
    assert c.field.kind == "dreamfusion" and c.shading == "lambertian-textureless" and c.textureless_rate == 0.2
    assert (c.guidance.method, c.guidance.view_mode, c.guidance.schedule, c.guidance.sds_weighting) == ("sds", "suffix", "uniform", "sds")
    assert c.depth.weight == 0 and c.regularisers.zvar == 0 and c.regularisers.sample_entropy == 1e-3 and c.regularisers.orientation == 1e-2
    assert c.optim.ema_decay == 0.95 and c.optim.grad_clip is None and c.cameras.uniform_sphere_rate == 0 and c.mesh.threshold == 10


@pytest.mark.parametrize(
    "name,key,value",
    [
        ("hifa-no-anneal", "guidance.schedule", "random"),
        ("hifa-no-rgb", "guidance.lambda_rgb", 0.0),
        ("hifa-no-depth", "depth.weight", 0.0),
        ("hifa-no-zvar", "regularisers.zvar", 0.0),
        ("hifa-1step", "guidance.denoising_steps", 1),
        ("hifa-no-smoothing", "renderer.smoothing", "naive"),
    ],
)
def test_each_ablation_changes_exactly_one_setting(name, key, value):
    base, ablation = flatten(to_dict(preset("hifa"))), flatten(to_dict(preset(name)))
    changed = {k for k in base if base[k] != ablation[k]} - {"preset"}
    assert changed == {key} and ablation[key] == value


def test_hifa_fast_halves_resolution_and_samples():
    c = preset("hifa-fast")
    assert (c.resolution, c.renderer.num_coarse, c.renderer.num_fine) == (256, 64, 32)


def test_every_preset_round_trips_through_dicts():
    for name in PRESETS:
        config = preset(name)
        assert from_dict(TrainConfig, to_dict(config)) == config


def test_overrides_are_coerced_by_type():
    c = resolve_config("hifa", "a green torus", "oracle", overrides=["optim.lr=1e-3", "iterations=20", "cameras.polar_deg=30,90", "tracking.enabled=false"])
    assert c.optim.lr == 1e-3 and c.iterations == 20 and c.cameras.polar_deg == (30.0, 90.0) and c.tracking.enabled is False
    assert c.prior.kind == "oracle" and c.cameras.radius == (3.2, 3.2) and c.resolution == 64


def test_stable_diffusion_prior_spec_sets_the_model():
    c = resolve_config("dreamfusion", "a corgi", "stable-diffusion:/models/sd15")
    assert c.prior.kind == "stable-diffusion" and c.prior.model == "/models/sd15" and c.resolution == 64


@pytest.mark.parametrize(
    "override,key",
    [("optim.lrr=1", "optim.lrr"), ("nosuch=1", "nosuch"), ("iterations=many", "iterations"), ("guidance.view_mode=sideways", "guidance.view_mode"),
     ("optim.lr=-1", "optim.lr"), ("renderer=3", "renderer"), ("prior.compile_mode=fastest", "prior.compile_mode"),
     ("field.mlp_precision=fp8", "field.mlp_precision"), ("prior.compile_encoder=true", "prior.compile_encoder"),
     ("prior.decoder_compile_mode=fastest", "prior.decoder_compile_mode"), ("prior.decoder_compile_mode=reduce-overhead", "prior.decoder_compile_mode"),
     ("depth.compile_mode=fastest", "depth.compile_mode"), ("depth.compile_mode=reduce-overhead", "depth.compile_mode")],
)
def test_bad_overrides_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        resolve_config("hifa", "a green torus", "oracle", overrides=[override])
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


def test_malformed_yaml_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML at line") as info:
        resolve_config("hifa", "a green torus", "oracle", config_file=str(bad))
    assert "\n" not in str(info.value)


def test_a_key_given_twice_in_a_config_file_is_an_error_not_the_last_value(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("iterations: 4\nrenderer:\n  num_coarse: 8\n  num_coarse: 16\niterations: 8\n")
    with pytest.raises(ConfigError) as info:
        resolve_config("hifa", "a green torus", "oracle", config_file=str(twice))
    assert str(info.value) == f"config '{twice}': malformed YAML at line 5, column 1: the key 'iterations' is given twice"
    twice.write_text("iterations: 4\nrenderer:\n  num_coarse: 8\n  num_coarse: 16\n")
    with pytest.raises(ConfigError) as info:
        resolve_config("hifa", "a green torus", "oracle", config_file=str(twice))
    assert str(info.value) == f"config '{twice}': malformed YAML at line 4, column 3: the key 'num_coarse' is given twice"
    unhashable = tmp_path / "unhashable.yaml"
    unhashable.write_text("? [1, 2]\n: 3\n")
    with pytest.raises(ConfigError, match="malformed YAML at line 1"):
        resolve_config("hifa", "a green torus", "oracle", config_file=str(unhashable))
    again = tmp_path / "again.yaml"  # the same key in two sections is fine
    again.write_text("renderer:\n  num_coarse: 8\n  compile: false\nprior:\n  compile: false\n")
    assert resolve_config("hifa", "a green torus", "oracle", config_file=str(again)).renderer.num_coarse == 8


def test_yaml_file_lays_over_the_preset(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("iterations: 42\nregularisers:\n  zvar: 0.5\n")
    c = resolve_config("hifa", "a green torus", "oracle", config_file=str(good))
    assert c.iterations == 42 and c.regularisers.zvar == 0.5 and c.regularisers.monotonicity == 1.0


def test_yaml_file_takes_the_dotted_keys_of_set(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("renderer.num_coarse: 32\nregularisers: {zvar: 0.5}\nregularisers.monotonicity: 2.0\n")
    c = resolve_config("hifa", "a green torus", "oracle", config_file=str(flat))
    assert c.renderer.num_coarse == 32 and c.regularisers.zvar == 0.5 and c.regularisers.monotonicity == 2.0
    flat.write_text("renderer.num_coarsest: 32\n")
    with pytest.raises(ConfigError, match="num_coarsest"):
        resolve_config("hifa", "a green torus", "oracle", config_file=str(flat))


@pytest.mark.parametrize(
    "override, flag",
    [("preset=dreamfusion", "--method"), ("prompt=a ladybug", "--prompt"), ("prior.kind=stable-diffusion", "--prior")],
)
def test_set_cannot_change_what_the_flags_choose(override, flag):
    with pytest.raises(HifaError, match=f"--set sets .* but {flag} gives .*; use {flag} instead"):
        resolve_config("hifa", "a green torus", "oracle", overrides=[override])
    key, value = override.split("=")  # repeating the flags' own value is fine
    same = {"preset": "hifa", "prompt": "a green torus", "prior.kind": "oracle"}[key]
    assert resolve_config("hifa", "a green torus", "oracle", overrides=[f"{key}={same}"]).preset == "hifa"


def test_a_dumped_config_reloads_for_its_prompt_only(tmp_path):
    from hifa.configio import dump_yaml

    dumped = tmp_path / "run.yaml"
    dumped.write_text(dump_yaml(resolve_config("dreamfusion", "a green torus", "oracle", overrides=["iterations=7"])))
    again = resolve_config("dreamfusion", "a green torus", "oracle", config_file=str(dumped))
    assert again.iterations == 7 and again.preset == "dreamfusion"
    with pytest.raises(HifaError, match="sets prompt to 'a green torus' but --prompt gives 'a ladybug'; drop prompt from the file"):
        resolve_config("dreamfusion", "a ladybug", "oracle", config_file=str(dumped))
    with pytest.raises(HifaError, match="sets preset to 'dreamfusion' but --method gives 'hifa'"):
        resolve_config("hifa", "a green torus", "oracle", config_file=str(dumped))


def test_unknown_method_and_prior_are_clear():
    with pytest.raises(HifaError, match="unknown method 'nerf'.*hifa-fast"):
        resolve_config("nerf", "x")
    with pytest.raises(HifaError, match="unknown prior 'dalle'"):
        resolve_config("hifa", "x", "dalle")


def test_apply_overrides_leaves_the_input_alone():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2"]) == {"a": {"b": 2}} and data == {"a": {"b": 1}}


def test_an_enormous_bad_value_still_gives_one_short_line():
    """Found by the mutation test: a 5000-digit device string was echoed whole."""
    from hifa.config import TrainConfig

    with pytest.raises(ConfigError) as info:
        TrainConfig(prompt="a ladybug", device="9" * 5000)
    message = str(info.value)
    assert message.startswith("config 'device': must be auto, cpu, cuda or cuda:N, got '999")
    assert "\n" not in message and len(message) < 600 and "characters)" in message


def test_yaml_merge_keys_work_in_config_files_and_the_keys_written_win(tmp_path):
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "renderer:\n  <<: &sampling {num_coarse: 8, num_fine: 4}\n  num_fine: 16\n"
        "mesh:\n  <<: [{resolution: 40}, {resolution: 50}]\n"
    )
    config = resolve_config("hifa", "a green torus", "oracle", config_file=str(merged))
    assert (config.renderer.num_coarse, config.renderer.num_fine) == (8, 16)
    assert config.mesh.resolution == 40  # YAML: the first mapping in a merged list wins
    merged.write_text("renderer:\n  <<: {num_coarse: 8}\n  num_fine: 16\n  num_fine: 32\n")
    with pytest.raises(ConfigError, match="the key 'num_fine' is given twice"):
        resolve_config("hifa", "a green torus", "oracle", config_file=str(merged))
