"""Every preset runs a few steps under the real Stable Diffusion and DPT loaders (tiny random models, CPU, offline)."""

import pytest
import torch

from benchmarks.dispatch import dispatches_per_phase
from hifa.presets import PRESETS
from hifa.run_setup import build_prior
from hifa.trainer import Trainer
from hifa.training import resolve_config


@pytest.fixture(scope="module")
def prior(models):
    config = resolve_config("hifa", "a corgi", f"stable-diffusion:{models[0]}")
    return build_prior(config.prior)


@pytest.mark.parametrize("method", list(PRESETS))
def test_preset_runs_under_the_tiny_world(method, models, prior, tmp_path):
    sd, dpt = models
    overrides = [
        "iterations=3", "resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "checkpoint_every=3", "val_every=3",
        "val_views=1", "val_resolution=8", f"depth.model={dpt}", "tracking.enabled=false", "field.grid.n_levels=4",
        "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64",
    ]
    config = resolve_config(method, "a corgi", f"stable-diffusion:{sd}", overrides=overrides)
    assert config.prior.model == str(sd)
    trainer = Trainer(config, tmp_path / method, prior=prior, progress=False)
    trainer.train()
    assert trainer.step == 3 and (tmp_path / method / "checkpoint.pt").is_file()
    expected = {"sds"} if method == "dreamfusion" else {"latent"}
    assert expected <= set(trainer.log_rows[-1])
    if config.depth.weight > 0:
        assert "depth" in trainer.log_rows[-1]
    assert all(torch.isfinite(p).all() for p in trainer.renderer.parameters())


def test_the_models_sit_on_the_trainer_s_device(models, tmp_path, monkeypatch):
    """device=cpu on a GPU machine (or cuda:1) puts the prior and the depth estimator there too, not on GPU 0."""
    sd, dpt = models
    config = resolve_config("hifa", "a corgi", f"stable-diffusion:{sd}", overrides=["device=cpu", f"depth.model={dpt}", "tracking.enabled=false"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what the loaders would see on a GPU machine
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert trainer.device == trainer.prior.device == trainer.estimator.device == torch.device("cpu")


def test_the_encoder_s_gradient_scale_is_checkpointed(models, tmp_path):
    """A resumed fp16 run scales the encoder's gradients as the uninterrupted run would (hifa.guidance.grad_scale)."""
    sd, dpt = models
    overrides = ["iterations=4", "resolution=16", "renderer.num_coarse=8", "renderer.num_fine=4", "checkpoint_every=2", "val_every=4",
                 "val_views=1", "val_resolution=8", "depth.weight=0", "tracking.enabled=false", "prior.precision=float16",
                 "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64"]
    config = resolve_config("hifa", "a corgi", f"stable-diffusion:{sd}", overrides=overrides)
    straight = Trainer(config, tmp_path / "straight", progress=False)
    straight.train()
    first = Trainer(config, tmp_path / "run", progress=False)
    first.train(until=2)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["grad_scale"]
    assert saved == first.prior.grad_scale.state() and saved["good_steps"] + saved["overflows"] == 2  # one backward a step
    resumed = Trainer(config, tmp_path / "run", progress=False)
    resumed.train()
    assert resumed.prior.grad_scale.state() == straight.prior.grad_scale.state()


def test_compiled_render_and_loss_math_match_eager_with_fewer_operators(models, prior, tmp_path):
    """renderer.compile (torch.compile, inductor on the CPU): the same loss terms and gradients as eager, same draws,
    and a few hundred fewer operators dispatched by the host per step."""
    sd, dpt = models
    overrides = ["resolution=16", "renderer.num_coarse=16", "renderer.num_fine=8", f"depth.model={dpt}", "tracking.enabled=false",
                 "field.grid.n_levels=4", "field.grid.log2_hashmap_size=12", "field.grid.finest_resolution=64",
                 "renderer.occupancy.resolution=16", "random_background_rate=0"]  # a solid background compiles a second graph
    results = []
    for compiled in ("false", "true"):
        config = resolve_config("hifa", "a corgi", f"stable-diffusion:{sd}", overrides=[*overrides, f"renderer.compile={compiled}"])
        trainer = Trainer(config, tmp_path / compiled, prior=prior, progress=False)
        terms, _ = trainer.loss_terms(1)
        sum(terms.values()).backward()
        grads = [p.grad.clone() for p in trainer.renderer.parameters() if p.grad is not None]
        trainer.training_step(2)  # compiles the step's remaining shapes
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        results.append((terms, grads, dispatches_per_phase(trainer, 3)))
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # no compiling in the counted step
    (eager_terms, eager_grads, eager_ops), (terms, grads, ops) = results
    assert eager_terms.keys() == terms.keys() and {"zvar", "monotonicity", "depth", "latent"} <= terms.keys()
    for key in terms:
        assert terms[key].item() == pytest.approx(eager_terms[key].item(), rel=1e-3, abs=1e-9), key
    assert len(grads) == len(eager_grads) and all(g.shape == e.shape for g, e in zip(grads, eager_grads))
    for g, e in zip(grads, eager_grads):
        assert torch.allclose(g, e, rtol=1e-3, atol=1e-4 * e.abs().max().item()), (g - e).abs().max()
    # The render's per-sample math, its backward and the losses: the phases' operators the host dispatches.
    assert ops["render"] < eager_ops["render"] - 20 and ops["backward"] < eager_ops["backward"] - 100, (ops, eager_ops)
    assert ops["total"] < eager_ops["total"] - 200, (ops, eager_ops)


def test_the_parts_a_training_compiles_are_named_for_its_progress_bar():
    """The progress bar says what the first step compiles: the prior and depth model only on CUDA and with Stable
    Diffusion, the render and loss math on any device; nothing by default."""
    from hifa.run_setup import compiled_parts

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    everything = ["prior.compile=true", "depth.compile=true", "renderer.compile=true"]
    sd = resolve_config("hifa", "a corgi", "stable-diffusion", overrides=everything)
    assert compiled_parts(sd, cuda) == ["the prior", "the depth model", "the render and loss math"]
    assert compiled_parts(sd, cpu) == ["the render and loss math"]
    assert compiled_parts(resolve_config("hifa", "a corgi", "stable-diffusion"), cuda) == []
    assert compiled_parts(resolve_config("hifa", "a corgi", "stable-diffusion", overrides=[*everything, "depth.weight=0"]), cuda) == \
        ["the prior", "the render and loss math"]
    oracle = resolve_config("hifa", "a green torus", "oracle", overrides=everything)
    assert compiled_parts(oracle, cuda) == ["the render and loss math"]
