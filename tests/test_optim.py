"""Adan (method.md §6.2, oracle §8.13), learning-rate schedule (§6.3, §8.14), gradient clipping."""

import math

import pytest
import torch

from hifa.background import BackgroundMLP
from hifa.encoding import HashGridConfig
from hifa.errors import ConfigError
from hifa.field import FieldConfig, NeRFField
from hifa.optim import build_adan, build_lr_scheduler, clip_gradients, gradient_norm, param_groups, warmup_factor

THETA = [(0.8999982020, -2.0999957990), (0.9315863735, -2.1907273686), (0.8762903599, -2.2775691426)]
GRADS = [(0.5, 1.0), (-0.25, 2.0), (6.0, 8.0)]  # the last has norm 10: clip factor 0.5


@pytest.mark.parametrize("foreach", [None, False, True])
def test_adan_matches_the_worked_example(foreach):
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = build_adan([theta], lr=0.1, foreach=foreach)
    for g, expected in zip(GRADS, THETA):
        theta.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert theta.detach().tolist() == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("foreach", [None, False])
def test_adan_is_identical_with_the_coordinates_as_two_parameters(foreach):
    a = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.tensor([-2.0], dtype=torch.float64))
    opt = build_adan([a, b], lr=0.1, foreach=foreach)
    for g, expected in zip(GRADS, THETA):
        a.grad = torch.tensor([g[0]], dtype=torch.float64)
        b.grad = torch.tensor([g[1]], dtype=torch.float64)
        opt.step()
        assert (a.item(), b.item()) == pytest.approx(expected, abs=1e-7)


def test_adan_float32_agrees_to_float32_precision():
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_adan([theta], lr=0.1)
    for g, expected in zip(GRADS, THETA):
        theta.grad = torch.tensor(g)
        opt.step()
        assert theta.detach().tolist() == pytest.approx(expected, abs=1e-6)


def test_adan_configuration():
    opt = build_adan([torch.nn.Parameter(torch.zeros(2))], lr=5e-3)
    d = opt.defaults
    assert tuple(d["betas"]) == (0.98, 0.92, 0.99) and d["eps"] == 1e-8 and d["weight_decay"] == 2e-5
    assert d["weight_decouple"] is False and d["max_grad_norm"] == 5.0 and opt.param_groups[0]["lr"] == 5e-3
    with pytest.raises(ConfigError, match="optim.lr"):
        build_adan([torch.nn.Parameter(torch.zeros(2))], lr=0.0)


class SpecAdan:
    """The §6.2 equations, written out in float64 (the replacement should the dependency go)."""

    def __init__(self, groups, betas=(0.98, 0.92, 0.99), eps=1e-8, decay=2e-5, max_norm=5.0):
        self.groups, self.betas, self.eps, self.decay, self.max_norm = groups, betas, eps, decay, max_norm
        self.k = 0
        self.state = {}

    def step(self, grads):  # grads: {name: tensor or None}; groups: [(lr, {name: tensor})]
        b1, b2, b3 = self.betas
        self.k += 1
        k = self.k
        # c_k = min(1, max_norm / (‖g‖ + ε)); the norm is accumulated in float32, as the reference (§10)
        present = [g for g in grads.values() if g is not None]
        norm = torch.stack([g.norm() for g in present]).float().square().sum().sqrt() + self.eps
        c = torch.clamp(self.max_norm / norm, max=1.0)
        for lr, params in self.groups:
            for name, theta in params.items():
                if grads.get(name) is None:
                    continue
                g = c * grads[name]
                if name not in self.state:
                    self.state[name] = dict(prev=g, m=torch.zeros_like(g), v=torch.zeros_like(g), n=torch.zeros_like(g))
                s = self.state[name]
                diff = g - s["prev"]
                s["m"] = b1 * s["m"] + (1 - b1) * g
                s["v"] = b2 * s["v"] + (1 - b2) * diff
                s["n"] = b3 * s["n"] + (1 - b3) * (g + b2 * diff) ** 2
                s["prev"] = g
                update = s["m"] / (1 - b1**k) + b2 * s["v"] / (1 - b2**k)
                denom = s["n"].sqrt() / math.sqrt(1 - b3**k) + self.eps
                theta.copy_((theta - lr * update / denom) / (1 + lr * self.decay))


def test_adan_matches_the_equations_over_many_steps_groups_and_late_parameters():
    g = torch.Generator().manual_seed(7)
    shapes = {"mlp": (3, 2), "grid": (5,), "late": (2,)}
    init = {name: torch.randn(shape, generator=g, dtype=torch.float64) for name, shape in shapes.items()}
    live = {name: torch.nn.Parameter(t.clone()) for name, t in init.items()}
    mirror = {name: t.clone() for name, t in init.items()}
    opt = build_adan([{"params": [live["mlp"], live["late"]], "lr": 0.05}, {"params": [live["grid"]], "lr": 0.5}], lr=0.05)
    spec = SpecAdan([(0.05, {"mlp": mirror["mlp"], "late": mirror["late"]}), (0.5, {"grid": mirror["grid"]})])
    clipped = 0
    for step in range(1, 13):
        scale = 8.0 if step % 4 == 0 else 0.7  # some steps exceed max_grad_norm 5
        grads = {name: scale * torch.randn(t.shape, generator=g, dtype=torch.float64) for name, t in init.items()}
        if step < 5:
            grads["late"] = None  # first seen at step 5, while the group's step counter keeps counting
        clipped += math.sqrt(sum(float((v**2).sum()) for v in grads.values() if v is not None)) > 5.0
        for name, p in live.items():
            p.grad = None if grads[name] is None else grads[name].clone()
        opt.step()
        spec.step(grads)
        for name in init:
            assert torch.allclose(live[name].detach(), mirror[name], rtol=0, atol=1e-12), (step, name)
    assert clipped >= 2 and not torch.equal(live["late"].detach(), init["late"])


def test_param_groups_split_hash_grid_from_mlps():
    grid = HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, finest_resolution=8, backend="torch")
    field = NeRFField(FieldConfig(grid=grid))
    background = BackgroundMLP()
    groups = param_groups(field, background, lr_mlp=5e-3)
    by_name = {gr["name"]: gr for gr in groups}
    assert by_name["mlp"]["lr"] == 5e-3 and by_name["grid"]["lr"] == pytest.approx(5e-2)
    assert {id(p) for p in by_name["grid"]["params"]} == {id(p) for p in field.encoding.parameters()}
    everything = {id(p) for p in field.parameters()} | {id(p) for p in background.parameters()}
    ids = [id(p) for gr in groups for p in gr["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == everything
    assert param_groups(field, None, 1e-3, 7e-3)[1]["lr"] == 7e-3
    opt = build_adan(groups, lr=5e-3)
    assert [gr["lr"] for gr in opt.param_groups] == [5e-3, pytest.approx(5e-2)]


def test_warmup_factor_values():
    assert warmup_factor(0) == 0.0
    assert warmup_factor(250) == pytest.approx(0.5)
    assert warmup_factor(100) == pytest.approx(0.2)
    for step in (500, 501, 2_000, 9_999, 10_000, 20_000):
        assert warmup_factor(step, total=10_000) == 1.0
    for step in (0, 1, 250, 10_000):
        assert warmup_factor(step, schedule="dreamfusion") == 1.0
        assert warmup_factor(step, warmup=0) == 1.0  # no warm-up: constant


def test_warmup_factor_cosine_branch_with_lower_floor():
    assert warmup_factor(500, total=1_500, min_ratio=0.1) == pytest.approx(1.0)
    assert warmup_factor(1_000, total=1_500, min_ratio=0.1) == pytest.approx(0.5)
    assert warmup_factor(1_450, total=1_500, min_ratio=0.1) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="optim.lr_schedule"):
        warmup_factor(3, schedule="linear")


def test_scheduler_convention_step_one_at_zero_and_501_first_full_step():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = build_adan([{"params": [params[0]], "lr": 5e-3}, {"params": [params[1]], "lr": 5e-2}], lr=5e-3)
    sched = build_lr_scheduler(opt, "hifa", warmup=500, total=10_000)
    used = {}
    for i in range(1, 503):  # global step i: optimiser step with the current lr, then scheduler step
        used[i] = [gr["lr"] for gr in opt.param_groups]
        opt.step()  # no gradients: a no-op update that keeps the optimiser/scheduler order
        sched.step()
    assert used[1] == [0.0, 0.0]
    assert used[251] == [pytest.approx(2.5e-3), pytest.approx(2.5e-2)]
    assert used[500] == [pytest.approx(5e-3 * 499 / 500), pytest.approx(5e-2 * 499 / 500)]
    assert used[501] == [pytest.approx(5e-3), pytest.approx(5e-2)] and used[502] == used[501]
    flat = build_lr_scheduler(build_adan([torch.nn.Parameter(torch.zeros(1))], lr=5e-3), "dreamfusion")
    assert flat.get_last_lr() == [5e-3]


def test_clip_gradients_returns_the_pre_clip_norm():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])
    norm = clip_gradients([a, b], 1.0)
    assert norm.item() == pytest.approx(5.0)
    assert torch.cat([a.grad, b.grad]).norm().item() == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.0]), atol=1e-6)
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])
    assert clip_gradients([a, b], 1.0).item() == pytest.approx(0.5)
    assert torch.allclose(b.grad, torch.tensor([0.4]))  # below the limit: untouched


def test_clip_gradients_uses_a_given_norm_and_an_infinite_limit_leaves_gradients_alone():
    a = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0])
    assert gradient_norm([a]).item() == pytest.approx(5.0)
    clip_gradients([a], 1.0, norm=torch.tensor(10.0))  # the given norm, not the gradient's own, sets the scale
    assert torch.allclose(a.grad, torch.tensor([0.3, 0.4]), atol=1e-6)
    before = a.grad.clone()
    assert clip_gradients([a], math.inf).item() == pytest.approx(0.5)
    assert torch.equal(a.grad, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_gradient_norm_is_non_finite_when_any_gradient_is(bad):
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(1000))
    a.grad, b.grad = torch.ones(3), torch.ones(1000)
    assert torch.isfinite(gradient_norm([a, b]))
    b.grad[517] = bad
    assert not torch.isfinite(gradient_norm([a, b]))
    b.grad = None  # parameters without a gradient are left out
    assert gradient_norm([a, b]).item() == pytest.approx(3**0.5)


def test_fused_cpu_adan_matches_pytorch_optimizer_s_adan():
    """The fused C++ step against Adan's own foreach step: 30 steps, clipping active in some, several tensor sizes."""
    from hifa.cpu_kernels import cpu_kernels

    if cpu_kernels() is None:
        pytest.skip("no C++ compiler: Adan's own foreach step is used")
    torch.manual_seed(0)
    shapes = [(65537, 2), (33, 32), (7,), (1,)]  # 65537: more than one parallel chunk, not a multiple of it
    start = [torch.randn(s) for s in shapes]
    runs = {}
    for fused in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        groups = [{"params": params[:1], "lr": 5e-2}, {"params": params[1:], "lr": 5e-3}]
        opt = build_adan(groups, lr=5e-3, fused=fused)
        generator = torch.Generator().manual_seed(1)
        for step in range(30):
            scale = 100.0 if step % 7 == 3 else 0.1  # global norm far above max_grad_norm: Adan's clip scales the step
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator) * scale
            opt.step()
        runs[fused] = (params, opt.state_dict())
    (fast, fast_state), (slow, slow_state) = runs[True], runs[False]
    for a, b, t in zip(fast, slow, start):
        assert not torch.equal(a, t)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for key, state in slow_state["state"].items():
        assert fast_state["state"][key].keys() == state.keys()
        for name, value in state.items():
            torch.testing.assert_close(fast_state["state"][key][name], value, rtol=1e-5, atol=1e-6)


def test_triton_adan_kernel_matches_the_fused_cpu_kernel():
    """hifa.adan_triton's kernel (Triton's interpreter on CPU tensors) against the C++ pass, over steps with and without
    clipping, the clip factor read from a tensor; a size that is not a multiple of the block."""
    pytest.importorskip("triton")
    from hifa import adan_triton
    from hifa.cpu_kernels import cpu_kernels

    if cpu_kernels() is None:
        pytest.skip("no C++ compiler for the reference pass")
    generator = torch.Generator().manual_seed(2)
    sizes = (3000, 1)
    # params, grads, exp_avg, exp_avg_sq (>= 0), exp_avg_diff, previous_grad
    start = [[torch.randn(n, generator=generator) for n in sizes] for _ in range(6)]
    start[3] = [t.abs() for t in start[3]]
    runs = {name: [[t.clone() for t in ts] for ts in start] for name in ("triton", "cpp")}
    for step in range(4):
        clip = 0.25 if step == 2 else 1.0
        grads = [torch.randn(n, generator=generator) for n in sizes]
        args = (0.02, 0.08, 0.01, 0.9 + 0.01 * step, 1e-8, 5e-3, 4e-3, 1e-4)  # betas, bias correction, eps, step sizes, decay
        for name, state in runs.items():
            state[1] = [g.clone() for g in grads]
            if name == "triton":
                adan_triton.adan_step(*state, torch.tensor(clip), *args)
            else:
                cpu_kernels().adan_step(*state, clip, *args)
    for a_list, b_list, s_list in zip(runs["triton"], runs["cpp"], start):
        for a, b, s in zip(a_list, b_list, s_list):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(runs["triton"][0][0], start[0][0])  # the parameters moved


def test_adan_checkpoints_move_between_the_fused_and_the_foreach_step():
    params = [torch.nn.Parameter(torch.ones(5))]
    fused = build_adan(params, lr=0.1, fused=True)
    params[0].grad = torch.full((5,), 0.5)
    fused.step()
    plain = build_adan(params, lr=0.1, fused=False)
    plain.load_state_dict(fused.state_dict())
    params[0].grad = torch.full((5,), -0.25)
    plain.step()
    assert plain.state_dict()["param_groups"][0]["step"] == 2 and torch.isfinite(params[0]).all()


def test_a_gated_adan_step_is_the_step_where_the_gate_holds_and_nothing_where_it_does_not():
    """FusedAdan.gated_step (overlap_steps): gate true is step(); gate false, with NaN gradients, leaves parameters and
    state as they were, and with its count taken back the run goes on as one that never took the step."""
    torch.manual_seed(0)
    start = [torch.randn(s) for s in ((40, 3), (7,))]
    grads = [[torch.randn(t.shape) for t in start] for _ in range(4)]
    runs = {}
    for gated in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = build_adan([{"params": params[:1], "lr": 5e-2}, {"params": params[1:], "lr": 5e-3}], lr=5e-3)
        for step, gs in enumerate(grads):
            if gated and step == 2:  # a non-finite step in between, gated out
                for p in params:
                    p.grad = torch.full(p.shape, float("nan"))
                before = [p.detach().clone() for p in params] + [v.clone() for st in opt.state.values() for v in st.values()]
                opt.gated_step(torch.tensor(False))
                after = [p.detach() for p in params] + list(v for st in opt.state.values() for v in st.values())
                assert all(torch.equal(a, b) for a, b in zip(before, after))
                opt.uncount_step()
            for p, g in zip(params, gs):
                p.grad = g.clone()
            if gated and step > 0:
                opt.gated_step(torch.tensor(True))
            else:
                opt.step()
        runs[gated] = (params, opt)
    (plain, plain_opt), (gated, gated_opt) = runs[False], runs[True]
    assert all(torch.equal(a, b) for a, b in zip(plain, gated))
    assert [g["step"] for g in gated_opt.param_groups] == [g["step"] for g in plain_opt.param_groups] == [4, 4]
    fresh = torch.nn.Parameter(torch.ones(2))
    fresh.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="first step"):  # Adan's state starts from the first step's gradient
        build_adan([fresh], lr=0.1).gated_step(torch.tensor(True))


def test_the_triton_adan_kernel_under_a_false_gate_writes_nothing():
    """The gated Triton pass (Triton's interpreter on CPU tensors): a true gate is the ungated pass, a false one leaves
    all six arrays, gradients included, as they were."""
    pytest.importorskip("triton")
    from hifa import adan_triton

    generator = torch.Generator().manual_seed(3)
    start = [[torch.randn(n, generator=generator) for n in (2500, 3)] for _ in range(6)]
    start[3] = [t.abs() for t in start[3]]
    args = (0.9, 0.02, 0.08, 0.01, 0.95, 1e-8, 5e-3, 4e-3, 1e-4)  # clip; betas, bias correction, eps, step sizes, decay
    runs = {}
    for name, gate in (("plain", None), ("open", torch.tensor(True)), ("shut", torch.tensor(False))):
        state = [[t.clone() for t in ts] for ts in start]
        adan_triton.adan_step(*state, torch.tensor(args[0]), *args[1:], gate=gate)
        runs[name] = state
    flat = lambda name: [t for ts in runs[name] for t in ts]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(flat("plain"), flat("open")))
    assert all(torch.equal(a, b) for a, b in zip(flat("shut"), [t for ts in start for t in ts]))
    assert not torch.equal(runs["open"][0][0], start[0][0])
