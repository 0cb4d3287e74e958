"""The training loop (method.md §6): render, guide, regularise, step; checkpoints, resume, NaN guard."""

from __future__ import annotations

import functools
import io
import logging
import math
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from hifa import regularisers as reg
from hifa.cameras import Cameras, orbit_cameras, sample_cameras
from hifa.loss_math import LossMath
from hifa.config import TrainConfig
from hifa.configio import dump_yaml, to_dict
from hifa.errors import HifaError, OutputError, Terminated, is_out_of_memory, shorten
from hifa.nan_guard import NanGuard
from hifa.resume_checks import check_resumable, memory_message
from hifa.step_values import StepValues, send
from hifa.stop_signals import catch_stop_signals
from hifa.guidance.guidance import Guidance, to_prior_size
from hifa.guidance.schedules import depth_weight_factor, ramp
from hifa.io import remove_stale_temporaries, save_image, write_bytes_atomic
from hifa.optim import build_adan, clip_gradients, gradient_norm, param_groups, warmup_factor
from hifa.provenance import ENVIRONMENT_FILE, environment, record_session
from hifa.renderer import RayOptions, Renderer
from hifa.run_folder import WEIGHTS_FILE
from hifa.run_setup import build_estimator, build_prior, build_renderer, compiled_parts, resolve_device
from hifa.sample_budget import SampleBudget
from hifa.transfer import to_device

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
OCCUPANCY_SEED_OFFSET = 0x0CC0  # the occupancy grid's probe stream: seed + this, apart from the run's streams
DEPTH_SCALE = 0.05 * 256**2 * 0.5  # method.md §5.1: L_depth = lambda_d(i) * 0.05 * 256^2 * 1/2 * mean(r^2)


def overlap_applies(config: TrainConfig, device: torch.device) -> bool:
    """Whether overlap_steps takes effect: on CUDA, where it saves the host's waits for the GPU."""
    return config.overlap_steps and device.type == "cuda"


class Trainer:
    """One text-to-3D optimisation writing into `run_dir`; `train()` resumes from its checkpoint if present."""

    def __init__(self, config: TrainConfig, run_dir: Path, prior=None, estimator=None, tracker=None, progress: bool = True):
        if not config.prompt.strip():
            raise HifaError("the prompt is empty; give the text to generate from (--prompt)")
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        torch.manual_seed(config.seed)
        self.device = resolve_device(config.device)
        self.renderer = build_renderer(config).to(self.device)
        self.loss_math = LossMath.compile() if config.renderer.compile else LossMath()
        # The models sit where the field does (device=cuda:1 puts all of them on GPU 1, device=cpu keeps them off the GPU).
        self.prior = prior if prior is not None else build_prior(config.prior, self.device)
        self.guidance = Guidance(self.prior, config.guidance)
        self.estimator = estimator
        if self.estimator is None and config.depth.weight > 0:
            self.estimator = build_estimator(config, self.prior, self.device)
        groups = param_groups(self.renderer.field, self.renderer.background, config.optim.lr, config.optim.lr * config.optim.grid_lr_scale)
        self.optimizer = build_adan(groups, config.optim.lr)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.ema = [p.detach().clone() for p in self.renderer.parameters()] if config.optim.ema_decay else None
        self.generator = torch.Generator().manual_seed(config.seed)
        # Ray jitter and fine samples are drawn where the rays live; on CPU that is the one generator.
        self.ray_generator = self.generator
        if self.device.type != "cpu":
            self.ray_generator = torch.Generator(self.device).manual_seed(config.seed)
        # The occupancy grid's probes draw from their own stream: switching the grid on leaves the run's
        # cameras, noise and ray samples as they were, so an A/B of the grid compares skipping alone.
        self.occupancy_generator = None
        if self.renderer.occupancy is not None:
            self.occupancy_generator = torch.Generator(self.device).manual_seed(config.seed + OCCUPANCY_SEED_OFFSET)
        self.overlap = overlap_applies(config, self.device)
        if config.overlap_steps and not self.overlap:
            log.warning("overlap_steps has no effect on %s: a step there never waits for a GPU (the option's padded sample "
                        "batches made a CPU step ~20 %% slower)", self.device)
        if self.overlap:  # the grid's samples and the orientation loss's normals, compacted without a wait
            self.renderer.budget = SampleBudget()
        self.tracker = tracker
        self.step = self.checkpoint_step = 0
        self.guard = NanGuard(config.nan_policy)
        self.log_rows: list[dict] = []
        self.pending: StepValues | None = None  # overlap_steps: the last step's values, read with the next step
        self.time_offset, self.started = 0.0, None  # training seconds before this train() call, and when it started

    # --- one step -------------------------------------------------------------------------
    def _camera_and_options(self) -> tuple[Cameras, RayOptions]:
        cfg, gen = self.config, self.generator
        camera = sample_cameras(1, cfg.cameras, gen)
        rand = lambda: float(torch.rand((), generator=gen))  # noqa: E731
        shading, light, ambient = "albedo", None, 0.1
        if cfg.shading == "lambertian-textureless":
            shading = "textureless" if rand() < cfg.textureless_rate else "lambertian"
            light = to_device(F.normalize(camera.origins[0] + torch.randn(3, generator=gen), dim=-1), self.device)
            ambient = 0.1 + 0.9 * rand()
        background = torch.rand(3, generator=gen) if rand() < cfg.random_background_rate else None
        view_dependent = rand() < cfg.field.view_dependent_rate
        options = RayOptions(
            training=True, shading=shading, background=background, light_dir=light, ambient=ambient,
            view_dependent=view_dependent, need_normals=cfg.regularisers.orientation > 0,
            normal_ray_fraction=cfg.regularisers.orientation_ray_fraction, generator=self.ray_generator,
        )
        return camera, options

    def loss_terms(self, step: int) -> tuple[dict[str, torch.Tensor], dict[str, float | torch.Tensor]]:
        """All weighted loss terms of step `step` (1-based) and diagnostics."""
        cfg, n = self.config, self.config.iterations
        camera, options = self._camera_and_options()
        res = cfg.resolution
        origins, dirs = camera.to(self.device).rays(res, res)
        # With renderer.checkpoint_chunk_rays this is a checkpointed chunked render with the same outputs.
        out = self.renderer(origins[0], dirs[0], options)
        image = out["image"].view(1, res, res, 3).permute(0, 3, 1, 2)
        guided = self.guidance.loss(image, cfg.prompt, camera, step, n, self.generator)
        terms = dict(guided.terms)
        r = ramp(step, n)
        rw = cfg.regularisers
        if cfg.depth.weight > 0 and self.estimator is not None:
            estimate = self.estimator.estimate(to_prior_size(image.detach(), self.prior.image_size), size=(res, res))
            loss_fn = self.loss_math.ssi_depth if cfg.depth.loss == "ssi" else self.loss_math.pearson_depth
            depth_term = loss_fn(out["depth"].view(1, res, res), out["opacity"].view(1, res, res), estimate.detach())
            scale = DEPTH_SCALE if cfg.depth.loss == "ssi" else 1.0
            terms["depth"] = cfg.depth.weight * depth_weight_factor(step, n) * scale * depth_term
        if rw.zvar > 0:
            terms["zvar"] = rw.zvar * r * self.loss_math.zvar(out["weights"], out["z_vals"], out["opacity"])
        if rw.z_entropy > 0:
            terms["z_entropy"] = rw.z_entropy * r * self.loss_math.z_entropy(out["weights"], out["deltas"])
        if rw.monotonicity > 0:
            terms["monotonicity"] = rw.monotonicity * self.loss_math.monotonicity(out["weights"], out["deltas"])
        if rw.opacity_entropy > 0:
            terms["opacity_entropy"] = rw.opacity_entropy * self.loss_math.opacity_entropy(out["opacity"])
        if rw.sample_entropy > 0:
            terms["sample_entropy"] = rw.sample_entropy * r * self.loss_math.sample_entropy(out["weights"])
        if rw.orientation > 0:
            terms["orientation"] = rw.orientation * reg.orientation_loss(out["orient"])
        # Device values stay tensors until the step's end: reading one here would make the host wait for the
        # forward pass before it could launch the backward.
        info = {"t": float(guided.t.float().mean()), "opacity": out["opacity"].detach().mean()}
        if self.renderer.occupancy is not None:
            info["occupied"] = self.renderer.occupancy.occupied.float().mean()
        return terms, info

    def training_step(self, step: int) -> list[dict[str, float]]:
        """Forward, backward, NaN guard, clip, Adan step, EMA; returns the logged rows it settled: this step's.

        With `overlap_steps` on CUDA the guard and the optimiser step run on the device and the rows returned are
        those of earlier steps (the previous one's; none on the first): the host queues this step's optimiser and
        the next step behind the GPU instead of waiting here for this step's values. `flush()` returns the last.
        A step where a parameter gets its first gradient waits (Adan's state starts from it).
        """
        cfg = self.config
        # The reference LambdaLR convention: global step i runs at factor(i - 1) (method.md §10).
        factor = warmup_factor(step - 1, cfg.optim.warmup_steps, cfg.iterations)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        grid = self.renderer.occupancy
        if grid is not None and (step - 1) % grid.config.update_every == 0:
            grid.update(self.renderer.field, self.occupancy_generator)
        self.optimizer.zero_grad(set_to_none=True)
        terms, info = self.loss_terms(step)
        total = sum(terms.values())
        total.backward()
        params = [p for p in self.renderer.parameters() if p.grad is not None]
        # One reduction for the whole guard (a per-tensor isfinite took ~4 % of a CPU step, and a sync per
        # parameter on CUDA): the global norm is non-finite iff a gradient is, or if it overflows, which is a
        # divergence worth skipping too.
        grad_norm = gradient_norm(params)
        # Everything the step logs, in one transfer (device values stay tensors until here; see loss_terms).
        on_device = {"loss": total, "grad_norm": grad_norm, **terms, **{k: v for k, v in info.items() if isinstance(v, torch.Tensor)}}
        on_host = {k: float(v) for k, v in info.items() if not isinstance(v, torch.Tensor)}
        lr = self.base_lrs[0] * factor
        budget = self.renderer.budget.take() if self.renderer.budget is not None else {}
        overlap = self.overlap and self.optimizer.initialised()
        values = send(step, lr, list(terms), {**on_device, **budget}, on_host, wait=not overlap, hidden=tuple(budget))
        if not overlap:  # the step's one wait for the GPU: the guard decides on the host whether to step
            earlier = self.flush()
            if (skipped := self._skip(values)) is not None:
                self.optimizer.zero_grad(set_to_none=True)
                return [*earlier, skipped]
            clip_gradients(params, cfg.optim.grad_clip or math.inf, grad_norm)
            self.optimizer.step()
            self._average(1 - cfg.optim.ema_decay if cfg.optim.ema_decay else None)
            return [*earlier, values.row()]
        finite = torch.isfinite(total.detach()) & torch.isfinite(grad_norm)
        if "overflow" in budget:  # samples beyond a fixed-size batch were dropped: the step does not stand
            finite = finite & ~budget["overflow"]
        clip_gradients(params, cfg.optim.grad_clip or math.inf, grad_norm)  # a non-finite step's clip is gated out below
        self.optimizer.gated_step(finite)
        self._average(finite * (1 - cfg.optim.ema_decay) if cfg.optim.ema_decay else None)
        earlier, self.pending = self.flush(), values
        return earlier

    def flush(self) -> list[dict[str, float]]:
        """The row of a step whose values are still on their way (overlap_steps), waiting for them; else none."""
        previous, self.pending = self.pending, None
        return [self._settle(previous)] if previous is not None else []

    def _settle(self, values: StepValues) -> dict[str, float]:
        """The row of an overlapped step, read now; a skipped one's optimiser step count is taken back."""
        if (skipped := self._skip(values)) is not None:
            # Its step was gated out on the device; the next one (already queued) ran with a count one too high.
            self.optimizer.uncount_step()
            return skipped
        return values.row()

    def _average(self, weight: float | torch.Tensor | None) -> None:
        """The parameters' exponential moving average (optim.ema_decay), moved by `weight` (0: not moved)."""
        if self.ema is not None and weight is not None:
            with torch.no_grad():
                for shadow, p in zip(self.ema, self.renderer.parameters()):
                    shadow.lerp_(p.detach(), weight)

    def _skip(self, values: StepValues) -> dict[str, float] | None:
        """The row of a step that does not stand (over its sample budget, or non-finite), else None."""
        if (budget := self.renderer.budget) is not None:
            budget.observe(values.read())
            if values.read().get("overflow"):
                log.warning("step %d skipped: more occupied samples than its fixed-size batch (overlap_steps); the next step "
                            "compacts them exactly and sizes the batches anew", values.step)
                return values.skipped_row()
        return self.guard.check(values, f"the last good checkpoint (step {self.checkpoint_step}) is kept in {self.run_dir / CHECKPOINT}")

    @property
    def skipped_steps(self) -> int:
        """Non-finite steps skipped so far (nan_policy=skip), over every resume."""
        return self.guard.skipped

    # --- the loop -------------------------------------------------------------------------
    def train(self, until: int | None = None) -> dict:
        """Run (or resume) to `iterations` (or stop after step `until`, checkpointed); returns a summary.

        SIGTERM (SLURM pre-emption, `kill`) or Ctrl-C during the loop finishes the current step, saves a
        checkpoint and raises Terminated (a second Ctrl-C: KeyboardInterrupt at once); out of memory
        becomes a one-line HifaError naming the memory settings.
        """
        cfg = self.config
        last = min(cfg.iterations, until or cfg.iterations)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.run_dir, self.run_dir / "validation"):  # left by a process killed mid-write
            remove_stale_temporaries(folder, recursive=False)
        self.time_offset, self.started = self.elapsed(), None
        if (self.run_dir / CHECKPOINT).is_file():
            self.load_checkpoint(self.run_dir / CHECKPOINT)
        if self.step < last:  # steps to train: a finished training's products (or a previous one's log) no longer describe the folder
            for name in (WEIGHTS_FILE, "train_summary.json", *(() if self.step else ("train_log.csv", ENVIRONMENT_FILE))):
                (self.run_dir / name).unlink(missing_ok=True)
            if changed := record_session(self.run_dir, self.step, self.environment):
                log.warning("resuming %s at step %d in another setting than its last session: %s", self.run_dir, self.step, "; ".join(changed))
        write_bytes_atomic(self.run_dir / "config.yaml", dump_yaml(cfg).encode())
        start, self.started = self.step, time.perf_counter()
        bar = tqdm(range(start + 1, last + 1), initial=start, total=cfg.iterations, desc=f"train {cfg.preset}",
                   unit="step", disable=not self.progress, dynamic_ncols=True, mininterval=1.0)
        if compiling := compiled_parts(cfg, self.device):  # a first step of minutes, not a hang
            bar.set_postfix_str(f"compiling {', '.join(compiling)} (cached for later runs)")
        stop: list[int] = []
        restore, current = catch_stop_signals(stop), start + 1
        try:
            for step in bar:
                current = step
                rows = self.training_step(step)
                self.step = step
                checkpoint = step % cfg.checkpoint_every == 0 or step == last or bool(stop)
                if checkpoint:  # a checkpoint holds every step's outcome (overlap_steps: the last step's too)
                    rows += self.flush()
                logged = [row for row in rows if self._log(row, bar)]
                if step == start + 1 and compiling and not logged:
                    bar.set_postfix_str("")
                if step % cfg.val_every == 0:
                    self.save_validation(step)
                if checkpoint:
                    self.save_checkpoint()
                if stop:
                    raise Terminated(
                        f"stopped by {signal.Signals(stop[0]).name} at step {step} of {cfg.iterations}; checkpoint saved in "
                        f"{self.run_dir / CHECKPOINT}: continue with `hifa train --resume` (same --out)",
                        stop[0],
                    )
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            raise HifaError(memory_message(cfg, current, self.checkpoint_step, exc)) from None
        finally:
            restore()
            bar.close()
            self.time_offset, self.started = self.elapsed(), None  # the clock stops with the loop
        summary = {"steps": self.step, "train_time_s": self.elapsed(), "final_loss": self.log_rows[-1].get("loss") if self.log_rows else None}
        if self.skipped_steps:
            summary["skipped_steps"] = self.skipped_steps
        return summary

    def _log(self, row: dict[str, float], bar: tqdm) -> bool:
        """Keep, track and show a step's row if it is one to log (every log_every steps, the last, a skipped one)."""
        cfg, step = self.config, int(row["step"])
        if not (step % cfg.log_every == 0 or step == cfg.iterations or row.get("skipped")):
            return False
        row["time_s"] = self.elapsed()
        self.log_rows.append(row)
        if self.tracker is not None:
            self.tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step)
        bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("loss", "latent", "image", "sds", "depth", "t")})
        return True

    @functools.cached_property
    def environment(self) -> dict:
        """This session's provenance record: code, libraries, device, and the checkpoints of the prior and depth model
        (made once: the MLflow run's tags and environment.json share it, and a checkpoint's fingerprint reads files)."""
        models = {"prior": getattr(self.prior, "model_id", None), "depth": getattr(self.estimator, "model_name", None)}
        return environment(self.device, {role: model for role, model in models.items() if model})

    # --- state ----------------------------------------------------------------------------
    def state(self) -> dict:
        state = {
            "step": self.step,
            "renderer": self.renderer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "log_rows": self.log_rows,
            "skipped_steps": self.guard.skipped,
            "consecutive_skips": self.guard.consecutive,
            "train_time_s": self.elapsed(),
            "grad_scale": scaler.state() if (scaler := getattr(self.prior, "grad_scale", None)) is not None else None,
            "config": to_dict(self.config),
        }
        if self.ray_generator is not self.generator:  # on CPU they are one generator
            state["ray_generator"] = self.ray_generator.get_state()
        if self.renderer.occupancy is not None:
            state["occupancy"] = self.renderer.occupancy.grid_state()
            state["occupancy_generator"] = self.occupancy_generator.get_state()
        return state

    def save_checkpoint(self) -> Path:
        """Write checkpoint.pt atomically (a crash mid-write leaves the previous one intact) and the log."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        try:
            path = write_bytes_atomic(self.run_dir / CHECKPOINT, buffer.getvalue())
        except OutputError as exc:
            kept = f"it still holds step {self.checkpoint_step}" if self.checkpoint_step else "there is none yet"
            raise OutputError(
                f"checkpoint of step {self.step} not saved: {exc}; {kept}; continue with `hifa train --resume` once there is room", exc.errno
            ) from None
        self.checkpoint_step = self.step
        self.write_log()
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore everything needed to continue exactly where the checkpoint left off."""
        try:
            # weights_only: a checkpoint is tensors, numbers and containers; never unpickle code from a file.
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise HifaError(f"cannot read checkpoint {path}: {exc.__class__.__name__} (truncated or corrupt); delete it to start over") from None
        if not isinstance(state, dict):
            raise HifaError(f"{path} is not a hifa training checkpoint; delete it to start over")
        if isinstance(state.get("config"), dict):
            check_resumable(state["config"], self.config, path)
        try:
            self.renderer.load_state_dict(state["renderer"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.ema = state["ema"]
            self.generator.set_state(state["generator"].cpu())
            if "ray_generator" in state:
                self.ray_generator.set_state(state["ray_generator"].cpu())
            torch.set_rng_state(state["torch_rng"].cpu())
            # A checkpoint from before the grid was switched on: the grid starts all occupied.
            if self.renderer.occupancy is not None and "occupancy" in state:
                self.renderer.occupancy.load_grid_state(state["occupancy"])
                if "occupancy_generator" in state:  # absent before session 8: the probes then restart their stream
                    self.occupancy_generator.set_state(state["occupancy_generator"].cpu())
            self.step = self.checkpoint_step = int(state["step"])
            self.log_rows = list(state["log_rows"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise HifaError(
                f"checkpoint {path} does not fit this run ({exc.__class__.__name__}: {shorten(str(exc).splitlines()[0] if str(exc) else '', 100)}); "
                "delete it to start over"
            ) from None
        self.guard.skipped = int(state.get("skipped_steps", 0))
        self.guard.consecutive = int(state.get("consecutive_skips", 0))
        self.time_offset = float(state.get("train_time_s", 0.0))  # train_log.csv's time_s goes on from the checkpoint
        if state.get("grad_scale") and getattr(self.prior, "grad_scale", None) is not None:
            self.prior.grad_scale.load(state["grad_scale"])

    def elapsed(self) -> float:
        """Seconds of training up to now, over every resume."""
        return self.time_offset + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def write_log(self) -> None:
        keys: list[str] = []
        for row in self.log_rows:
            keys += [k for k in row if k not in keys]
        lines = [",".join(keys)] + [",".join(f"{row.get(k, ''):.6g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in keys) for row in self.log_rows]
        write_bytes_atomic(self.run_dir / "train_log.csv", ("\n".join(lines) + "\n").encode())

    @torch.no_grad()
    def eval_renderer(self) -> Renderer:
        """The renderer with EMA weights when EMA is on (stable-dreamfusion evaluates the EMA)."""
        if self.ema is None:
            return self.renderer
        ema = build_renderer(self.config).to(self.device)
        for shadow, p in zip(self.ema, ema.parameters()):
            p.copy_(shadow)
        return ema

    def save_validation(self, step: int) -> Path:
        """A strip of validation renders with the learned background (method.md §10)."""
        cfg = self.config
        cams = orbit_cameras(cfg.val_views, radius=float(sum(cfg.cameras.radius) / 2), fovy_deg=float(sum(cfg.cameras.fovy_deg) / 2))
        views = self.eval_renderer().render_views(cams, cfg.val_resolution, cfg.val_resolution, RayOptions())
        strip = torch.cat(list(views["image"]), dim=1)
        return save_image(strip, self.run_dir / "validation" / f"step_{step:06d}.png")

