"""Audit of hifa.adan.FusedAdan against Adan's equations written out by hand (proximal and decoupled weight decay)."""

import math

import pytest
import torch

from hifa.adan import FusedAdan
from hifa.optim import build_adan

GRADS = [[0.5, 1.0], [-0.25, 2.0], [6.0, 8.0]]  # the last step's norm 10 is over max_grad_norm 5: its gradient is halved


def reference(theta, grads, lr, betas=(0.98, 0.92, 0.99), eps=1e-8, decay=0.0, max_norm=5.0, decouple=False):
    """Adan (Xie et al. 2022, Alg. 1, as pytorch_optimizer orders it) in Python floats: the parameters after each step."""
    b1, b2, b3 = betas
    theta = list(theta)
    m = v = n = prev = None
    out = []
    for k, raw in enumerate(grads, start=1):
        norm = math.sqrt(sum(x * x for x in raw))
        c = min(1.0, max_norm / (norm + eps))
        g = [c * x for x in raw]
        if m is None:  # the first step's difference is zero
            m, v, n, prev = [0.0] * len(g), [0.0] * len(g), [0.0] * len(g), list(g)
        for i, gi in enumerate(g):
            diff = gi - prev[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * diff
            n[i] = b3 * n[i] + (1 - b3) * (gi + b2 * diff) ** 2
            step = m[i] / (1 - b1**k) + b2 * v[i] / (1 - b2**k)
            denom = math.sqrt(n[i]) / math.sqrt(1 - b3**k) + eps
            if decouple:
                theta[i] = theta[i] * (1 - lr * decay) - lr * step / denom
            else:
                theta[i] = (theta[i] - lr * step / denom) / (1 + lr * decay)
        prev = g
        out.append(list(theta))
    return out


def run(optimizer, param, grads):
    out = []
    for g in grads:
        param.grad = torch.tensor(g, dtype=param.dtype)
        optimizer.step()
        out.append(param.detach().tolist())
    return out


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("decay", [0.0, 2e-5, 0.3])
def test_build_adan_float32_follows_the_equations_with_proximal_decay(fused, decay):
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    got = run(build_adan([param], lr=0.1, weight_decay=decay, fused=fused), param, GRADS)
    expected = reference([1.0, -2.0], GRADS, lr=0.1, decay=decay)
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=2e-6, abs=2e-6), step


@pytest.mark.parametrize("fused", [True, False])
def test_fused_adan_with_decoupled_weight_decay_follows_the_equations(fused):
    """FusedAdan is a public Adan: weight_decouple=True (AdamW-style decay) must not take the proximal kernel."""
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = FusedAdan([param], lr=0.1, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.3, weight_decouple=True,
                          max_grad_norm=5.0, fused=fused)
    got = run(optimizer, param, GRADS)
    expected = reference([1.0, -2.0], GRADS, lr=0.1, decay=0.3, decouple=True)
    for step, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=2e-6, abs=2e-6), step


@pytest.mark.parametrize("fused", [True, False])
def test_each_group_decays_and_steps_with_its_own_lr_under_one_global_clip(fused):
    """Two groups (the MLPs and the hash grid): the clip factor is the global norm's, the lr and the decay each group's."""
    a = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    b = torch.nn.Parameter(torch.tensor([0.5, 0.25]))
    optimizer = build_adan([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.4}], lr=0.1, weight_decay=0.3, fused=fused)
    grads_b = [[1.0, -1.0], [0.0, 3.0], [2.0, 2.0]]
    for ga, gb in zip(GRADS, grads_b):
        a.grad, b.grad = torch.tensor(ga), torch.tensor(gb)
        optimizer.step()
    # The reference clips each coordinate list by the norm over both parameters: scale the raw gradients first.
    scaled_a, scaled_b = [], []
    for ga, gb in zip(GRADS, grads_b):
        c = min(1.0, 5.0 / (math.sqrt(sum(x * x for x in ga + gb)) + 1e-8))
        scaled_a.append([c * x for x in ga])
        scaled_b.append([c * x for x in gb])
    no_clip = dict(max_norm=math.inf)
    assert a.detach().tolist() == pytest.approx(reference([1.0, -2.0], scaled_a, 0.1, decay=0.3, **no_clip)[-1], rel=2e-6, abs=2e-6)
    assert b.detach().tolist() == pytest.approx(reference([0.5, 0.25], scaled_b, 0.4, decay=0.3, **no_clip)[-1], rel=2e-6, abs=2e-6)
