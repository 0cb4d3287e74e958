"""An up-front check of a workflow's suites: every method's settings resolve and every prompt suits the prior.

The Snakefile runs it once at start (`hifa check-suites`), so a bad `train.set` key or an oracle prompt
outside the catalogue stops the workflow in one line instead of failing every train job later (on a
cluster, after queueing). Model availability is not checked: `make paper` may download on first use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from hifa.errors import HifaError, shorten, shown
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


def is_text(value: object) -> bool:
    """A non-empty string."""
    return isinstance(value, str) and bool(value)


def is_overrides(value: object) -> bool:
    """A method's `--set` overrides: a list of strings."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def require_shape(valid: bool, where: str, wanted: str, value: object) -> None:
    """A one-line HifaError naming the bad element unless `valid`."""
    if not valid:
        raise HifaError(f"{where} must be {wanted}, got {shown(value)}")


def check_mapping(where: str, value: object, valid: Callable[[object], bool], wanted: str) -> None:
    """An object whose every value is `valid`; the message names the first that is not."""
    require_shape(isinstance(value, dict), where, "an object", value)
    for key, item in value.items():
        require_shape(valid(item), f"{where}[{shown(key)}]", wanted, item)


def check_shape(index: int, suite: object) -> None:
    """One element of the Snakefile's list: {suite, prior, budget?, prompts: {slug: prompt}, methods: {method: [KEY=VALUE]}}."""
    where = f"suites[{index}]"
    require_shape(isinstance(suite, dict), where, "an object", suite)
    for key in ("suite", "prior"):
        require_shape(is_text(suite.get(key)), f"{where}.{key}", "a non-empty string", suite.get(key))
    budget = suite.get("budget")
    require_shape(budget is None or is_text(budget), f"{where}.budget", "a non-empty string or null", budget)
    check_mapping(f"{where}.prompts", suite.get("prompts"), lambda p: isinstance(p, str), "a string")
    check_mapping(f"{where}.methods", suite.get("methods"), is_overrides, "a list of KEY=VALUE strings")


def read_suites(source: str) -> list[dict]:
    """The JSON list of suites (a file, or '-' for stdin), its shape checked before any suite is."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        suites = json.loads(text)
    except (OSError, ValueError) as exc:
        raise HifaError(f"cannot read the suites to check from {source}: {exc}") from None
    if not isinstance(suites, list):
        raise HifaError(f"the suites to check ({source}) must be a JSON list, got {shown(suites)}")
    for index, suite in enumerate(suites):
        check_shape(index, suite)
    return suites


def check_suites(source: str) -> int:
    """Check the suites of a JSON list (a file, or '-' for stdin) as the Snakefile writes it; returns the count."""
    suites = read_suites(source)
    for suite in suites:
        check_suite(suite["suite"], suite["prior"], suite.get("budget") or "cpu", suite["prompts"], suite["methods"])
    return len(suites)
