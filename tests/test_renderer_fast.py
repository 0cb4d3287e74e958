"""The renderer's speed/memory paths (checkpointed chunks, empty-space skipping) give the dense one-pass answer."""

import pytest
import torch
from torch import nn

from hifa import volume
from hifa.background import BackgroundMLP
from hifa.cameras import orbit_cameras
from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError
from hifa.field import FieldConfig, NeRFField
from hifa.occupancy import OccupancyConfig, OccupancyGrid
from hifa.renderer import RayOptions, Renderer, RendererConfig
from hifa.trainer import Trainer
from tests.test_train import tiny_config

PER_SAMPLE = ("weights", "z_vals", "sigmas", "deltas", "pdf")
LIGHT = torch.tensor([0.0, 1.0, 0.0])


def small_field(**kwargs) -> NeRFField:
    torch.manual_seed(0)
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4, finest_resolution=64)
    return NeRFField(FieldConfig(grid=grid, **kwargs))


def rays(size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    origins, dirs = orbit_cameras(1, radius=3.0, fovy_deg=30.0).rays(size, size)
    return origins[0], dirs[0]


def render_with_grads(renderer: Renderer, origins, dirs, options: RayOptions) -> tuple[dict, torch.Tensor]:
    """Outputs and the gradient of a loss on the image and the per-sample outputs w.r.t. every parameter."""
    renderer.zero_grad(set_to_none=True)
    out = renderer(origins, dirs, options)
    loss = out["image"].square().sum() + (out["weights"] * out["z_vals"]).sum() + 1e-3 * out["pdf"].sum() + out["z_variance"].sum()
    if "orient" in out:
        loss = loss + out["orient"].mean()
    loss.backward()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in renderer.parameters()]
    return out, torch.cat([g.flatten() for g in grads])


def count_points(field: nn.Module, method: str) -> list[int]:
    """Wrap `field.<method>` so every call records its number of points."""
    calls: list[int] = []
    original = getattr(field, method)
    setattr(field, method, lambda points, *args: calls.append(len(points)) or original(points, *args))
    return calls


def assert_same(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].shape == b[key].shape, key
        assert torch.allclose(a[key], b[key], atol=atol), (key, (a[key] - b[key]).abs().max())


# --- checkpointed chunks --------------------------------------------------------------------

CASES = {
    "albedo, background MLP": dict(),
    "albedo, per-ray background, orientation on 30% of rays": dict(background="per-ray", need_normals=True, normal_ray_fraction=0.3),
    "lambertian, solid background, normals": dict(shading="lambertian", light_dir=LIGHT, background="solid", need_normals=True),
}


@pytest.mark.parametrize("case", CASES)
def test_checkpointed_chunks_equal_one_pass_outputs_and_gradients(case):
    field, background = small_field(), BackgroundMLP()
    origins, dirs = rays()
    R = origins.shape[0]
    kwargs = dict(CASES[case])
    if kwargs.get("background") == "per-ray":
        kwargs["background"] = torch.rand(R, 3, generator=torch.Generator().manual_seed(1))
    elif kwargs.get("background") == "solid":
        kwargs["background"] = torch.tensor([0.2, 0.4, 0.6])
    results = []
    for chunk in (0, 50):  # 144 rays: chunks of 50, 50 and 44
        renderer = Renderer(field, background, RendererConfig(num_coarse=16, num_fine=8, checkpoint_chunk_rays=chunk))
        generator = torch.Generator().manual_seed(7)
        calls = count_points(field, "density_features")
        out, grads = render_with_grads(renderer, origins, dirs, RayOptions(training=True, generator=generator, **kwargs))
        del field.density_features
        results.append((out, grads, generator.get_state(), calls))
    (one, g_one, state_one, calls_one), (chunked, g_chunked, state_chunked, calls_chunked) = results
    assert_same(one, chunked, atol=1e-6)
    assert torch.allclose(g_one, g_chunked, atol=1e-5), (g_one - g_chunked).abs().max()
    assert g_one.abs().sum() > 0
    assert torch.equal(state_one, state_chunked)  # the same draws, no more
    assert len(calls_chunked) > len(calls_one)  # per chunk ...
    assert sum(calls_chunked) == 2 * sum(calls_one)  # ... and once more in backward (normals' probes included)


def test_compiled_math_in_checkpointed_chunks_with_skipping_equals_the_eager_one_pass_render():
    """renderer.compile (inductor on the CPU) inside checkpointed chunks (a shorter last chunk: two graphs), with the
    occupancy grid: the eager one-pass outputs and gradients; evaluation renders stay eager."""
    field, background = small_field(), BackgroundMLP()
    origins, dirs = rays()
    grid = OccupancyConfig(resolution=16)
    results = []
    for compiled, chunk in ((False, 0), (True, 50)):
        config = RendererConfig(num_coarse=16, num_fine=8, checkpoint_chunk_rays=chunk, occupancy=grid, compile=compiled)
        renderer = Renderer(field, background, config)
        renderer.occupancy.update(field, torch.Generator().manual_seed(3))
        options = RayOptions(training=True, generator=torch.Generator().manual_seed(7), background=torch.tensor([0.2, 0.4, 0.6]))
        results.append(render_with_grads(renderer, origins, dirs, options))
    (eager, g_eager), (fused, g_fused) = results
    assert_same(eager, fused, atol=1e-5)
    assert g_eager.abs().sum() > 0 and torch.allclose(g_eager, g_fused, rtol=1e-4, atol=1e-5), (g_eager - g_fused).abs().max()
    assert renderer.compiled_math.weigh is not volume.ray_weights  # the compiled functions ran ...
    with torch.no_grad():  # ... and an evaluation render of 7 rays compiles nothing new
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        renderer(origins[:7], dirs[:7], RayOptions())
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_checkpointing_keeps_only_the_chunk_outputs_for_backward():
    field, background = small_field(), BackgroundMLP()
    origins, dirs = rays(16)
    saved = []
    for chunk in (0, 64):
        renderer = Renderer(field, background, RendererConfig(num_coarse=32, num_fine=16, checkpoint_chunk_rays=chunk))
        total = [0]

        def pack(t, total=total):
            total[0] += t.numel() * t.element_size()
            return t

        # Only tensors saved outside a checkpointed region reach these (outer) hooks.
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = renderer(origins, dirs, RayOptions(training=True, generator=torch.Generator().manual_seed(0)))
            (out["image"].sum() + out["z_variance"].sum()).backward()
        saved.append(total[0])
    assert saved[1] < saved[0] / 4, saved


def test_without_autograd_the_render_is_one_pass():
    field = small_field()
    renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=16, num_fine=8, checkpoint_chunk_rays=10))
    origins, dirs = rays(8)
    calls = count_points(field, "density_features")
    with torch.no_grad():
        renderer(origins, dirs, RayOptions(training=True))
    assert calls == [64 * 16, 64 * 8]


def test_trainer_steps_with_checkpointed_chunks_equal_plain_steps(tmp_path):
    params = []
    for extra in ([], ["renderer.checkpoint_chunk_rays=100"]):  # 16x16 = 256 rays: three chunks
        config = tiny_config(tmp_path, extra=["tracking.enabled=false", "regularisers.orientation=0.01",
                                              "regularisers.orientation_ray_fraction=0.5", *extra])
        trainer = Trainer(config, tmp_path / f"run{len(extra)}", progress=False)
        rows = [row for step in (1, 2, 3) for row in trainer.training_step(step)]
        params.append((trainer.renderer.state_dict(), rows))
    (plain, rows_plain), (chunked, rows_chunked) = params
    for name in plain:
        assert torch.allclose(plain[name], chunked[name], atol=1e-5), name
    for a, b in zip(rows_plain, rows_chunked):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and "orientation" in a


# --- empty-space skipping ----------------------------------------------------------------------

BLOB_EDGE = 0.6  # a blob of density 50 * (1 - |x| / 0.3): beyond this radius softplus gives < 1e-21


def blob_field() -> NeRFField:
    return small_field(blob_density=50.0, blob_radius=0.3)


def conservative_grid(renderer: Renderer) -> None:
    """Mark every cell that reaches within BLOB_EDGE of the origin: all density above ~1e-21 is inside."""
    grid = renderer.occupancy
    cells = torch.arange(grid.occupied.numel())
    half = grid.bound / grid.config.resolution
    nearest = (grid.cell_centres(cells).abs() - half).clamp(min=0).norm(dim=-1)
    grid.occupied.copy_(nearest < BLOB_EDGE)


@pytest.mark.parametrize("shading, threshold", [("albedo", 0.0), ("lambertian", 0.0), ("lambertian", 1e-4)])
@pytest.mark.parametrize("chunk", [0, 50])
def test_skipping_with_a_conservative_grid_equals_the_dense_render(shading, threshold, chunk):
    field, background = blob_field(), BackgroundMLP()
    origins, dirs = rays()
    options = dict(shading=shading, light_dir=LIGHT if shading == "lambertian" else None, need_normals=shading == "lambertian")
    results = []
    for resolution in (0, 16):
        grid = OccupancyConfig(resolution=resolution)
        config = RendererConfig(num_coarse=32, num_fine=16, checkpoint_chunk_rays=chunk, normal_weight_threshold=threshold, occupancy=grid)
        renderer = Renderer(field, background, config)
        if resolution:
            conservative_grid(renderer)
        points, probes = count_points(field, "density_features"), count_points(field, "normals")
        out, grads = render_with_grads(renderer, origins, dirs, RayOptions(training=True, generator=torch.Generator().manual_seed(3), **options))
        del field.density_features, field.normals
        results.append((out, grads, sum(points), sum(probes)))
    (dense, g_dense, points_dense, probes_dense), (skipped, g_skipped, points_skipped, probes_skipped) = results
    opacity = dense["opacity"].detach()
    assert 0.99 < float(opacity.max()) and float(opacity.min()) < 1e-6  # the blob is hit and missed
    assert_same(dense, skipped, atol=1e-6)
    assert torch.allclose(g_dense, g_skipped, atol=1e-5)
    for key in PER_SAMPLE:
        assert skipped[key].shape == (origins.shape[0], 48), key
    assert points_skipped < points_dense / 2  # most samples lie in empty cells: the field never sees them
    # Normals: only at occupied samples (with a weight threshold they already were only at significant ones).
    assert probes_skipped <= probes_dense and (probes_skipped < probes_dense / 2 or shading == "albedo" or threshold > 0)
    empty = ~renderer.occupancy.occupied_at((origins[:, None] + dirs[:, None] * skipped["z_vals"][..., None]).reshape(-1, 3))
    assert torch.all(skipped["sigmas"].reshape(-1)[empty] == 0)


def test_evaluation_renders_and_a_fresh_grid_skip_nothing():
    field = blob_field()
    renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=16, num_fine=8, occupancy=OccupancyConfig(resolution=8)))
    origins, dirs = rays(8)
    calls = count_points(field, "density_features")
    renderer(origins, dirs, RayOptions(training=True))  # fresh grid: every cell occupied
    conservative_grid(renderer)
    renderer(origins, dirs, RayOptions(training=False))  # evaluation renders stay dense
    assert calls == [64 * 16, 64 * 8] * 2


def test_an_empty_grid_evaluates_one_sample_per_pass_and_renders_nothing():
    """All cells empty: one sample per pass still goes to the field (tiny-cuda-nn rejects empty batches), the rest is 0."""
    field = blob_field()
    renderer = Renderer(field, BackgroundMLP(), RendererConfig(num_coarse=16, num_fine=8, occupancy=OccupancyConfig(resolution=8)))
    renderer.occupancy.occupied.zero_()
    origins, dirs = rays(8)
    calls = count_points(field, "density_features")
    out = renderer(origins, dirs, RayOptions(training=True, background=torch.ones(3), generator=torch.Generator().manual_seed(0)))
    assert calls == [1, 1]  # coarse and fine
    assert int((out["sigmas"].detach() != 0).sum()) <= 2 and float(out["opacity"].detach().max()) < 1e-3


class Ball(nn.Module):
    """Density 10 inside |x| < 0.5, 0 outside."""

    config = FieldConfig()

    def density(self, points):
        return (points.norm(dim=-1) < 0.5).float() * 10.0


def test_grid_update_marks_the_blob_occupied_and_empty_space_empty():
    grid = OccupancyGrid(OccupancyConfig(resolution=16, decay=0.5, threshold=0.01), bound=1.0)
    assert grid.occupancy() == 1.0  # nothing is skipped before the first update
    grid.update(Ball(), torch.Generator().manual_seed(0))
    centres = grid.cell_centres(torch.arange(16**3))
    half_diagonal = 3**0.5 / 16
    inside = centres.norm(dim=-1) + half_diagonal < 0.5
    outside = centres.norm(dim=-1) - half_diagonal > 0.5
    assert torch.all(grid.occupied[inside]) and not torch.any(grid.occupied[outside])
    assert 0.05 < grid.occupancy() < 0.1  # the ball fills 4/3 pi 0.5^3 / 8 = 6.5% of the box
    assert torch.equal(grid.occupied_at(torch.tensor([[0.0, 0.0, 0.0], [0.9, -0.9, 0.9], [5.0, 0.0, 0.0]])), torch.tensor([True, False, False]))
    before = grid.density.clone()
    grid.update(lambda_field(lambda p: torch.zeros(len(p))))
    assert torch.equal(grid.density, before * 0.5)  # an emptied field decays, as instant-ngp's grid
    assert torch.equal(grid.occupied, grid.density > 0.01)


def test_dilation_grows_the_occupied_cells_by_a_margin():
    from hifa.occupancy import dilate

    one = torch.zeros(8**3, dtype=torch.bool)
    one[(3 * 8 + 4) * 8 + 5] = True  # cell (3, 4, 5)
    assert torch.equal(dilate(one, 8, 0), one)
    grown = dilate(one, 8, 1).view(8, 8, 8)
    assert grown.sum() == 27 and grown[2:5, 3:6, 4:7].all()
    corner = torch.zeros(8**3, dtype=torch.bool)
    corner[0] = True
    assert dilate(corner, 8, 2).sum() == 27  # clipped at the border: 3 x 3 x 3 inside the box
    # In a grid: the ball's cells plus a one-cell margin, so the surface can grow (skipped cells get no gradient).
    tight = OccupancyGrid(OccupancyConfig(resolution=16, dilation=0), bound=1.0)
    loose = OccupancyGrid(OccupancyConfig(resolution=16, dilation=1), bound=1.0)
    for grid in (tight, loose):
        grid.update(Ball(), torch.Generator().manual_seed(0))
    assert torch.equal(loose.occupied, dilate(tight.occupied, 16, 1)) and loose.occupancy() > tight.occupancy()
    with pytest.raises(ConfigError, match="dilation"):
        OccupancyConfig(resolution=16, dilation=-1)


def lambda_field(fn):
    module = nn.Module()
    module.density = fn
    return module


def test_grid_state_round_trip():
    grid = OccupancyGrid(OccupancyConfig(resolution=8), bound=1.0)
    grid.update(Ball(), torch.Generator().manual_seed(0))
    other = OccupancyGrid(OccupancyConfig(resolution=8), bound=1.0)
    other.load_grid_state(grid.grid_state())
    assert torch.equal(other.density, grid.density) and torch.equal(other.occupied, grid.occupied)
    with pytest.raises(ValueError, match="cells"):
        OccupancyGrid(OccupancyConfig(resolution=4), bound=1.0).load_grid_state(grid.grid_state())
    renderer = Renderer(small_field(), BackgroundMLP(), RendererConfig(occupancy=OccupancyConfig(resolution=8)))
    assert not any(key.startswith("occupancy") for key in renderer.state_dict())  # the trainer saves it itself


def test_trainer_updates_the_grid_and_resume_is_exact(tmp_path):
    extra = ["tracking.enabled=false", "renderer.occupancy.resolution=16", "renderer.occupancy.update_every=2"]
    config = tiny_config(tmp_path, extra=extra)
    straight = Trainer(config, tmp_path / "a", progress=False)
    grid = straight.renderer.occupancy
    updates, update = [], grid.update
    grid.update = lambda field, generator: updates.append(straight.step) or update(field, generator)
    straight.train()
    assert updates == [0, 2, 4]  # before steps 1, 3 and 5
    assert 0 < grid.occupancy() < 1 and grid.density.max() > 0
    assert "occupied" in straight.log_rows[0]
    first = Trainer(config, tmp_path / "b", progress=False)
    first.train(until=3)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["occupancy"]
    assert torch.equal(saved["occupied"], first.renderer.occupancy.occupied)
    del first
    resumed = Trainer(config, tmp_path / "b", progress=False)
    resumed.train()
    for (name, a), (_, b) in zip(straight.renderer.state_dict().items(), resumed.renderer.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert torch.equal(grid.density, resumed.renderer.occupancy.density)
    assert torch.equal(grid.occupied, resumed.renderer.occupancy.occupied)


def test_the_grid_draws_from_its_own_stream_so_the_run_s_draws_are_the_dense_run_s(tmp_path):
    """Switching the grid on changes which samples are evaluated, not the cameras, noise or ray samples drawn."""
    extra = ["tracking.enabled=false", "iterations=4", "checkpoint_every=100", "val_every=100"]
    dense = Trainer(tiny_config(tmp_path, extra=extra), tmp_path / "dense", progress=False)
    skipping = Trainer(tiny_config(tmp_path, extra=[*extra, "renderer.occupancy.resolution=16", "renderer.occupancy.update_every=2"]),
                       tmp_path / "grid", progress=False)
    for trainer in (dense, skipping):
        trainer.train()
    assert skipping.renderer.occupancy.occupancy() < 1  # the grid was updated (and drew its probes)
    assert torch.equal(skipping.generator.get_state(), dense.generator.get_state())
    assert torch.equal(skipping.ray_generator.get_state(), dense.ray_generator.get_state())


def test_fast_path_settings_are_validated():
    with pytest.raises(ConfigError, match="renderer.checkpoint_chunk_rays"):
        RendererConfig(checkpoint_chunk_rays=-1)
    with pytest.raises(ConfigError, match="renderer.occupancy.resolution"):
        OccupancyConfig(resolution=1)
    with pytest.raises(ConfigError, match="renderer.occupancy.decay"):
        OccupancyConfig(decay=1.0)
    defaults = RendererConfig()
    assert defaults.checkpoint_chunk_rays == 0 and defaults.occupancy.resolution == 0  # both off by default
