"""An up-front check of a workflow's suites: every method's settings resolve and every prompt suits the prior.

The Snakefile runs it once at start (`hifa check-suites`), so a bad `train.set` key or an oracle prompt
outside the catalogue stops the workflow in one line instead of failing every train job later (on a
cluster, after queueing). Model availability is not checked: `make paper` may download on first use.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from hifa.errors import HifaError, shorten
from hifa.training import check_prompt, resolve_config


def check_suite(name: str, prior: str, budget: str, prompts: dict[str, str], methods: dict[str, list[str]]) -> None:
    """One suite: prompts ({slug: prompt}) and each method's `--set` overrides; a one-line HifaError on the first problem."""
    if not prompts or not methods:
        raise HifaError(f"suite {name}: no {'prompts' if not prompts else 'methods'}")
    first = next(iter(prompts.values()))
    for method, overrides in methods.items():
        try:
            config = resolve_config(method, first, prior, budget, overrides=overrides)
        except HifaError as exc:
            raise HifaError(f"suite {name}, method {method}: {exc}") from None
    for prompt in prompts.values():  # what `hifa train` checks before it writes anything
        try:
            check_prompt(replace(config, prompt=prompt))
        except HifaError as exc:
            raise HifaError(f"suite {name}, prompt {shorten(prompt, 60)}: {exc}") from None


def check_suites(source: str) -> int:
    """Check the suites of a JSON list (a file, or '-' for stdin) as the Snakefile writes it; returns the count."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        suites = json.loads(text)
    except (OSError, ValueError) as exc:
        raise HifaError(f"cannot read the suites to check from {source}: {exc}") from None
    for suite in suites:
        check_suite(suite["suite"], suite["prior"], suite.get("budget") or "cpu", suite["prompts"], suite["methods"])
    return len(suites)
