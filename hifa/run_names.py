"""Run folder names of a suite: the prompt's slug, and `.seed<N>` for a seed other than 0.

Seed 0 is the presets' seed, so a single-seed suite (and every results tree made before seeds were a
suite setting) keeps its bare `runs/<method>/<slug>/` folders. Slugs never hold a dot, so the suffix
cannot be mistaken for part of a prompt. The workflow (workflow/rules/common.smk) keeps an import-free
copy of these two functions; tests/test_workflow.py checks that they agree, and that its `slug` wildcard
matches every name.
"""

from __future__ import annotations

import re

SEED_SUFFIX = ".seed"
_NAME = re.compile(r"(?P<slug>[^.]+)(?:\.seed(?P<seed>[1-9][0-9]*))?")


def run_name(slug: str, seed: int = 0) -> str:
    """'a-green-torus' for seed 0, 'a-green-torus.seed2' for seed 2."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return slug if seed == 0 else f"{slug}{SEED_SUFFIX}{seed}"


def parse_run_name(name: str) -> tuple[str, int] | None:
    """(slug, seed) of a run folder name, or None when the name is not one ('x.seed0', 'x.y')."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return match["slug"], int(match["seed"] or 0)
