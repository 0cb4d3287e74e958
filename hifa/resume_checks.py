"""What stops or warns a training run: a checkpoint of another asset, and the memory settings an out-of-memory names."""

from __future__ import annotations

import logging
from pathlib import Path

from hifa.config import TrainConfig, as_read_today
from hifa.configio import UNTRAINED, changed_keys, to_dict
from hifa.errors import HifaError, shorten

log = logging.getLogger(__name__)

# Settings a checkpoint cannot be resumed under when they change (another asset, not a continuation).
RESUME_IDENTITY = ("prompt", "preset", "seed", "field", "prior.kind", "prior.model")
# ... except how the field is computed, not what it is: a resume may change these (with a warning).
RESUME_COMPUTE = ("field.mlp_precision", "field.grid.backend")


def memory_message(config: TrainConfig, step: int, checkpoint_step: int, exc: BaseException) -> str:
    """One line for an out-of-memory error: where, and the settings that decide the memory."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    r = config.renderer
    return (
        f"out of memory at step {step} ({shorten(detail, 100)}); lower resolution (now {config.resolution}), "
        f"renderer.num_coarse / renderer.num_fine (now {r.num_coarse} / {r.num_fine}), renderer.chunk_rays (now {r.chunk_rays}), "
        f"set renderer.checkpoint_chunk_rays (now {r.checkpoint_chunk_rays}; e.g. 16384) or use prior.precision=float16 (now {config.prior.precision}) with --set KEY=VALUE; "
        + (f"the last checkpoint (step {checkpoint_step}) is kept: continue with `hifa train --resume`" if checkpoint_step
           else "no checkpoint was saved yet")
    )


def check_resumable(saved: dict, config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint of another asset (prompt, method, seed, field, prior); warn about other changed settings
    (tracking and mesh settings aside: they change nothing a training makes)."""
    old, new, changed = changed_keys(as_read_today(saved), to_dict(config))
    changed = [k for k in changed if k.split(".", 1)[0] not in UNTRAINED]
    rank = lambda k: None if k in RESUME_COMPUTE else next(  # noqa: E731
        (i for i, key in enumerate(RESUME_IDENTITY) if k == key or k.startswith(key + ".")), None)
    identity = sorted((k for k in changed if rank(k) is not None), key=rank)
    if identity:
        key = identity[0]
        raise HifaError(
            f"{path} was trained with {key} = {shorten(str(old.get(key)), 60)}, this run asks for {shorten(str(new.get(key)), 60)}: "
            "it is another asset, not a continuation; choose another --out (or delete the folder to start over)"
        )
    if changed:
        log.warning("resuming %s with changed settings: %s", path, ", ".join(changed))

