"""The NaN guard (nan_policy): a finite step stands; a non-finite one stops the run, or is skipped until too many in a row."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hifa.errors import HifaError
from hifa.step_values import StepValues

log = logging.getLogger(__name__)

# nan_policy=skip: this many non-finite steps in a row mean the run diverged; it stops (checkpoint kept).
MAX_CONSECUTIVE_SKIPS = 100


@dataclass
class NanGuard:
    """The policy ('stop' or 'skip') and the counts of skipped steps, in all and in a row (a checkpoint keeps both)."""

    policy: str
    skipped: int = 0
    consecutive: int = 0

    def check(self, values: StepValues, kept: str) -> dict[str, float] | None:
        """None for a finite step; else the skipped step's row, or a HifaError that ends with `kept` (the checkpoint left)."""
        if not (bad := values.non_finite()):
            self.consecutive = 0
            return None
        if self.policy == "stop":
            raise HifaError(f"non-finite loss at step {values.step} ({', '.join(bad)}); stopped, {kept}")
        self.skipped += 1
        self.consecutive += 1
        log.warning("non-finite loss at step %d (%s): step skipped (nan_policy=skip), %d skipped so far", values.step, ", ".join(bad),
                    self.skipped)
        if self.consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise HifaError(f"{self.consecutive} non-finite steps in a row up to step {values.step} ({', '.join(bad)}): "
                            f"the run diverged; stopped, {kept}")
        return values.skipped_row()
