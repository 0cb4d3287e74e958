"""The benchmark report's text: per-section figures as Markdown, and the machine-independent ratios."""

from __future__ import annotations


def markdown(report: dict) -> str:
    """A report as Markdown: one line of figures per section, then the ratios."""
    lines = [f"# Benchmarks on {report['device_name']} ({report['machine']['date']}, commit {report['machine']['commit']})", ""]
    for name, figures in report["sections"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in figures.items()))
    if report.get("ratios"):
        lines += ["", "Ratios (machine-independent):", ""]
        lines += [f"- {k}: {v:.3g}" for k, v in report["ratios"].items()]
    return "\n".join(lines) + "\n"


def ratios(sections: dict) -> dict:
    """Figures that hold across machines: relative costs."""
    out = {}
    g = sections.get("guidance", {})
    if "sds_ms" in g:
        for k in (1, 2, 4):
            if f"hifa_k{k}_ms" in g:
                out[f"guidance hifa K={k} / sds"] = g[f"hifa_k{k}_ms"] / g["sds_ms"]
    steps = {name: s["step_ms"] for name, s in sections.items() if name.startswith("train_step") and "step_ms" in s}
    if "train_step_hifa" in steps and "train_step_hifa-fast" in steps:
        out["train step hifa-fast / hifa"] = steps["train_step_hifa-fast"] / steps["train_step_hifa"]
    render = {name: s for name, s in sections.items() if name.startswith("render_hifa") and "rays_per_s" in s}
    if "render_hifa" in render:
        base = render["render_hifa"]
        for name, label in (("render_hifa+checkpoint", "checkpointed chunks"), ("render_hifa+occupancy", "occupancy skipping")):
            if name in render:
                out[f"render hifa {label} / one pass: time"] = base["rays_per_s"] / render[name]["rays_per_s"]
                out[f"render hifa {label} / one pass: memory kept for backward"] = render[name]["saved_mib"] / base["saved_mib"]
        if "field_points_fraction" in render.get("render_hifa+occupancy", {}):
            out["render hifa occupancy skipping / one pass: field points"] = render["render_hifa+occupancy"]["field_points_fraction"]
    if "train_step_hifa" in steps and "train_step_hifa+checkpoint" in steps:
        out["train step hifa checkpointed / hifa"] = steps["train_step_hifa+checkpoint"] / steps["train_step_hifa"]
    if "render_hifa@torch-grid" in render and "render_hifa" in render:
        out["render hifa default grid / pure-PyTorch grid: speed-up"] = render["render_hifa"]["rays_per_s"] / render["render_hifa@torch-grid"]["rays_per_s"]
    if "train_step_hifa+checkpoint" in steps and "train_step_hifa+checkpoint@torch-grid" in steps:
        out["train step hifa+checkpoint, pure-PyTorch grid / default grid"] = steps["train_step_hifa+checkpoint@torch-grid"] / steps["train_step_hifa+checkpoint"]
    if "train_step_hifa" in steps and "train_step_hifa+occupancy" in steps:
        out["train step hifa, occupancy grid / dense"] = steps["train_step_hifa+occupancy"] / steps["train_step_hifa"]
    for variant, label in (("guidance@channels_last", "channels_last"), ("guidance+compile", "compiled"),
                           ("guidance+compile@reduce-overhead", "compiled as CUDA graphs")):
        other = sections.get(variant, {})
        for k in (1, 4):
            if f"hifa_k{k}_ms" in other and f"hifa_k{k}_ms" in g:
                out[f"guidance hifa K={k}, {label} / default"] = other[f"hifa_k{k}_ms"] / g[f"hifa_k{k}_ms"]
    if "train_step_hifa-fast+render-compile" in steps and "train_step_hifa-fast" in steps:
        out["train step hifa-fast, compiled render and loss math / eager"] = steps["train_step_hifa-fast+render-compile"] / steps["train_step_hifa-fast"]
    for name in ("hifa", "hifa-fast"):
        if f"train_step_{name}+compile" in steps and f"train_step_{name}" in steps:
            out[f"train step {name}, compiled prior / default"] = steps[f"train_step_{name}+compile"] / steps[f"train_step_{name}"]
    for name, figures in sections.items():  # overlap_steps against the same row without it, steps taken back to back
        waiting = sections.get(name.removesuffix("+overlap"), {})
        if name.endswith("+overlap") and "step_ms_back_to_back" in figures and "step_ms_back_to_back" in waiting:
            out[f"train step {name.removeprefix('train_step_').removesuffix('+overlap')}, overlapped / waiting (back to back)"] = (
                figures["step_ms_back_to_back"] / waiting["step_ms_back_to_back"])
    e = sections.get("encoding", {})
    for backend in ("cpp", "triton", "tcnn"):
        if f"{backend}_points_per_s" in e and "torch_points_per_s" in e:
            out[f"encoding {backend} / torch speed-up"] = e[f"{backend}_points_per_s"] / e["torch_points_per_s"]
    return out
