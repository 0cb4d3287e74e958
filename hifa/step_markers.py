"""The steps after training: the folder and completion marker each writes in a run folder, the command that
makes it, and which finished steps predate the training's last step (no torch: the report reads these)."""

from __future__ import annotations

import json
from pathlib import Path

# Each pipeline step writes into R/<folder>/ and finishes by writing its marker, the completion signal.
STEPS = {"render": "render.json", "depth": "depth.json", "mesh": "mesh.json", "eval": "metrics.json"}
COMMANDS = {"render": "hifa render", "depth": "hifa depth", "mesh": "hifa mesh", "eval": "hifa evaluate"}


def stale_steps(run: Path, trained: int) -> dict[str, int]:
    """{step: training step it was made at} for finished steps made before the training's last step."""
    stale = {}
    for step, marker in STEPS.items():
        try:
            made = json.loads((run / step / marker).read_text()).get("step")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(made, int) and not isinstance(made, bool) and made != trained:
            stale[step] = made
    return stale
