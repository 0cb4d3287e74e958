"""Fused hash-grid encoding in Triton: one kernel over every level, for the features and for the table gradients.

Same layout, hash, interpolation and clamping as `hifa.encoding.encode_level` (tiny-cuda-nn's), so
all grid backends share one set of tables. Autograd keeps only the (N, 3) points for backward,
where the pure-PyTorch path keeps every level's 8 corner indices and weights per point (about
1.5 KiB per point at 16 levels). Gradients are scattered with fp32 atomics, so their summation
order, and the last bits of the result, vary from run to run, as with tiny-cuda-nn.

On CUDA tensors the kernels are compiled; on CPU tensors they run through Triton's interpreter
(hifa.triton_support), which is slow and exists so that the kernels are tested on machines without a GPU.
"""

import torch

from hifa.triton_support import kernel, launch_options, tl

BLOCK = 256


def _kernel(unit_ptr, table_ptr, feat_ptr, scale_ptr, res_ptr, hashed_ptr, offset_ptr, size_ptr, n_points,
            L: tl.constexpr, F: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr, BACKWARD: tl.constexpr):
    """Forward: features (N, L*F) at `feat_ptr` from the table. Backward: table gradients at `table_ptr` from the
    feature gradients at `feat_ptr`, one atomic add per (point, corner, feature)."""
    # Corners one at a time (static unroll): tl.sum is a jitted helper, which Triton's interpreter runs only
    # under TRITON_INTERPRET=1, and the CPU tests run the kernel without it. Merging runs of samples along a
    # ray before the backward's adds was measured slower on an H200 (240 vs 257 M points/s): the adds are
    # throughput-bound, not contended.
    level = tl.program_id(1)
    n = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = n < n_points
    feats = tl.arange(0, F)
    scale = tl.load(scale_ptr + level)
    res = tl.load(res_ptr + level)
    hashed = tl.load(hashed_ptr + level)
    offset = tl.load(offset_ptr + level).to(tl.int64)
    size = tl.load(size_ptr + level)
    dense_res = res * (1 - hashed)  # 0 on hashed levels, whose dense index is never used (and would overflow)
    px = tl.load(unit_ptr + n * 3 + 0, mask=mask, other=0.0) * scale + 0.5
    py = tl.load(unit_ptr + n * 3 + 1, mask=mask, other=0.0) * scale + 0.5
    pz = tl.load(unit_ptr + n * 3 + 2, mask=mask, other=0.0) * scale + 0.5
    fx, fy, fz = tl.floor(px), tl.floor(py), tl.floor(pz)
    tx, ty, tz = px - fx, py - fy, pz - fz
    if SMOOTH:
        tx, ty, tz = tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty), tz * tz * (3.0 - 2.0 * tz)
    ix, iy, iz = fx.to(tl.int32), fy.to(tl.int32), fz.to(tl.int32)
    feat = feat_ptr + n.to(tl.int64)[:, None] * (L * F) + level * F + feats[None, :]
    if BACKWARD:
        grad = tl.load(feat, mask=mask[:, None], other=0.0)
    else:
        acc = tl.full([BLOCK, F], 0.0, tl.float32)
    for c in tl.static_range(8):  # corner c has offset (c & 1, (c >> 1) & 1, (c >> 2) & 1)
        cx, cy, cz = ix + (c & 1), iy + ((c >> 1) & 1), iz + ((c >> 2) & 1)
        w = (tx if c & 1 else 1.0 - tx) * (ty if (c >> 1) & 1 else 1.0 - ty) * (tz if (c >> 2) & 1 else 1.0 - tz)
        h = cx.to(tl.uint32) ^ (cy.to(tl.uint32) * 2654435761) ^ (cz.to(tl.uint32) * 805459861)
        h_index = (h & (size - 1).to(tl.uint32)).to(tl.int32)
        d_index = (cx + cy * dense_res + cz * dense_res * dense_res) % size
        entry = offset + tl.where(hashed != 0, h_index, d_index).to(tl.int64)
        table = table_ptr + entry[:, None] * F + feats[None, :]
        if BACKWARD:
            # Relaxed: the adds need no ordering, and Triton's default (acq_rel) fences every one. One sm_90 vector
            # reduction per corner (red.global.v2.f32.add, both features) measured no faster on an H100 (285 vs 286 M points/s).
            tl.atomic_add(table, w[:, None] * grad, mask=mask[:, None], sem="relaxed")
        else:
            acc += w[:, None] * tl.load(table, mask=mask[:, None], other=0.0)
    if not BACKWARD:
        tl.store(feat, acc, mask=mask[:, None])


class LevelTable:
    """Per-level layout as small device tensors, the form the kernels read."""

    def __init__(self, levels: list, n_features: int, smooth: bool, device: torch.device):
        self.scale = torch.tensor([lv.scale for lv in levels], dtype=torch.float32, device=device)
        self.res = torch.tensor([lv.resolution for lv in levels], dtype=torch.int32, device=device)
        self.hashed = torch.tensor([int(lv.hashed) for lv in levels], dtype=torch.int32, device=device)
        self.offset = torch.tensor([lv.offset for lv in levels], dtype=torch.int32, device=device)
        self.size = torch.tensor([lv.size for lv in levels], dtype=torch.int32, device=device)
        self.n_levels, self.n_features, self.smooth = len(levels), n_features, smooth

    def args(self) -> tuple:
        return self.scale, self.res, self.hashed, self.offset, self.size


def _launch(unit: torch.Tensor, table: torch.Tensor, feat: torch.Tensor, layout: "LevelTable", backward: bool) -> None:
    """One program per (BLOCK points, level): features from the table, or table gradients from feature gradients."""
    grid = (-(-unit.shape[0] // BLOCK), layout.n_levels)
    kernel(_kernel, unit.device.type != "cuda")[grid](unit, table, feat, *layout.args(), unit.shape[0], L=layout.n_levels, F=layout.n_features,
                                                SMOOTH=layout.smooth, BLOCK=BLOCK, BACKWARD=backward, **launch_options(unit.device))


class TritonHashGrid(torch.autograd.Function):
    """Features (N, L*F) of unit points (N, 3) from the flat table; gradient for the table only."""

    @staticmethod
    def forward(ctx, unit: torch.Tensor, flat_table: torch.Tensor, layout: LevelTable):  # type: ignore[override]
        unit = unit.contiguous().float()
        out = unit.new_empty(unit.shape[0], layout.n_levels * layout.n_features)
        if unit.shape[0]:
            _launch(unit, flat_table.detach().contiguous(), out, layout, backward=False)
        ctx.save_for_backward(unit)
        ctx.layout, ctx.table_numel = layout, flat_table.numel()
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (unit,) = ctx.saved_tensors
        grad_table = torch.zeros(ctx.table_numel, dtype=torch.float32, device=unit.device)
        if unit.shape[0]:
            _launch(unit, grad_table, grad.contiguous().float(), ctx.layout, backward=True)
        return None, grad_table, None
