"""Discover the runs of a suite folder and read them into typed records; aggregate each
metric per method as mean ± standard error across prompts (each prompt's value being the mean
over its seeds when the suite has several).

Layout: SUITE/suite.json (optional) and SUITE/runs/<method>/<prompt-slug>[.seed<N>]/ per run.
Every (method, prompt, seed) of the suite is a record, also when its folder is missing or broken:
the report marks such runs, it never drops them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hifa.errors import HifaError, shown
from hifa.report.catalog import order_methods, sort_metrics
from hifa.report.run import Aggregate, Run, Value, aggregate, read_json, read_run
from hifa.run_names import parse_run_name, run_name

__all__ = ["Aggregate", "Run", "Suite", "Value", "aggregate", "collect"]


@dataclass
class Suite:
    root: Path
    name: str
    world: str | None
    methods: list[str]
    slugs: list[str]
    prompts: dict[str, str]
    runs: dict[tuple[str, str, int], Run]  # (method, slug, seed) -> run
    metric_keys: list[str]
    notes: dict[str, str]
    versions: dict
    description: str | None = None  # suite.json "description"
    seeds: list[int] = field(default_factory=lambda: [0])
    problems: list[str] = field(default_factory=list)  # suite-level: run folders left out, and why

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1

    def run(self, method: str, slug: str, seed: int | None = None) -> Run:
        """The run of a seed; without one, of the suite's first seed."""
        return self.runs[(method, slug, self.seeds[0] if seed is None else seed)]

    def seed_runs(self, method: str, slug: str) -> list[Run]:
        """The runs of one (method, prompt), one per seed."""
        return [self.runs[(method, slug, seed)] for seed in self.seeds]

    def seed_values(self, method: str, slug: str, key: str) -> dict[int, Value]:
        """seed -> the run's value of a metric, for the seeds whose run has one (failed runs excluded)."""
        return {run.seed: v for run in self.seed_runs(method, slug)
                if not run.failed and (v := run.metrics.get(key)) is not None and math.isfinite(v.mean)}

    def value(self, method: str, slug: str, key: str, seeds: set[int] | None = None) -> Value | None:
        """A prompt's value of a metric. One seed in the suite: the run's own value (with its s.e. over
        views, if any). Several: the mean over the seeds that have a value (only those in `seeds`, when
        given) with the s.e. over them and n = their number."""
        values = self.seed_values(method, slug, key)
        if not self.multi_seed:
            return values.get(self.seeds[0])
        agg = aggregate({str(s): v.mean for s, v in values.items() if seeds is None or s in seeds})
        return Value(agg.mean, agg.se, agg.n) if agg else None

    def aggregate(self, method: str, key: str) -> Aggregate | None:
        """Mean ± s.e. over the prompts that have a value (see `value`)."""
        values = {slug: value.mean for slug in self.slugs if (value := self.value(method, slug, key)) is not None}
        return aggregate(values)

    def seed_sd(self, method: str, key: str) -> float | None:
        """Spread between seeds: the root of the mean over prompts of the sample variance across seeds
        (prompts with at least two seeds' values); None with one seed."""
        if not self.multi_seed:
            return None
        per_prompt = [[v.mean for v in self.seed_values(method, slug, key).values()] for slug in self.slugs]
        variances = [statistics.variance(xs) for xs in per_prompt if len(xs) > 1]
        return math.sqrt(statistics.fmean(variances)) if variances else None

    def counts(self) -> dict[str, int]:
        statuses = [run.status for run in self.runs.values()]
        return {"runs": len(statuses), **{s: statuses.count(s) for s in ("complete", "incomplete", "failed")}}


def _folder_name(name: object) -> bool:
    """Whether `name` can name one folder under runs/ (a method, or a slug), never a path out of it."""
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _methods(value: object) -> bool:
    """Distinct folder names, at least one."""
    return isinstance(value, list) and bool(value) and all(map(_folder_name, value)) and len(set(value)) == len(value)


def _prompt_entry(slug: str, prompt: object) -> bool:
    """A run folder name of seed 0 (no dot, so `.seed<N>` stays unambiguous) mapped to a prompt that is not blank."""
    return _folder_name(slug) and "." not in slug and isinstance(prompt, str) and bool(prompt.strip())


def _seeds(value: object) -> bool:
    """Distinct non-negative integers (not booleans), at least one."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value) and len(set(value)) == len(value))


def _text_or_null(value: object) -> bool:
    return value is None or isinstance(value, str)


PROMPTS_WANTED = "a non-empty mapping of prompt slugs (folder names without a dot) to prompts"
# suite.json's keys as the workflow writes them (suite_manifest in workflow/rules/suite.smk): each may be absent
# (a hand-made manifest; results made before seeds existed have none), but one that is present must have its type.
MANIFEST_KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "suite": (lambda v: isinstance(v, str), "a string (the suite's name)"),
    "methods": (_methods, "a non-empty list of distinct method names"),
    "prompts": (lambda v: isinstance(v, dict) and bool(v), PROMPTS_WANTED),
    "seeds": (_seeds, "a non-empty list of distinct non-negative integers"),
    "world": (_text_or_null, "a string or null"),
    "description": (_text_or_null, "a string or null"),
}


def _bad_key(path: Path, key: str, wanted: str, value: object) -> HifaError:
    return HifaError(f"{path}: {key!r} must be {wanted}, got {shown(value)}")


def check_manifest(meta: dict, path: Path) -> dict:
    """suite.json's contents, each known key's type checked: a one-line HifaError naming the file and the first bad key."""
    for key, (valid, wanted) in MANIFEST_KEYS.items():
        if key in meta and not valid(meta[key]):
            raise _bad_key(path, key, wanted, meta[key])
    for slug, prompt in meta.get("prompts", {}).items():
        if not _prompt_entry(slug, prompt):
            raise _bad_key(path, "prompts", PROMPTS_WANTED, {slug: prompt})  # the bad entry alone: the mapping may be long
    return meta


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) if path.is_dir() else []


def collect(suite_dir: str | Path) -> Suite:
    """Read a suite folder. Raises HifaError when it is not a folder or holds no runs."""
    root = Path(suite_dir)
    if not root.exists():
        raise HifaError(f"suite folder not found: {root}")
    if not root.is_dir():
        raise HifaError(f"not a folder: {root} (expected a suite folder holding runs/<method>/<prompt-slug>/)")
    problems: list[str] = []
    meta = read_json(root / "suite.json", problems) or {}
    if problems:
        raise HifaError(f"{root / 'suite.json'}: {problems[0]}")
    check_manifest(meta, root / "suite.json")
    declared_prompts: dict[str, str] = meta.get("prompts", {})
    declared_methods: list[str] = meta.get("methods", [])
    declared_seeds: list[int] = meta.get("seeds", [])
    runs_dir = root / "runs"
    found = {m: [name for d in _subdirs(runs_dir / m) if (name := parse_run_name(d))] for m in _subdirs(runs_dir)}
    # The seeds suite.json names are the suite's: a folder of another seed, left by an earlier config, would change the
    # declared prompts' means. Without a manifest, every seed found.
    seeds = declared_seeds or sorted({seed for names in found.values() for _, seed in names}) or [0]
    ignored = [f"runs/{m}/{run_name(slug, seed)}: seed {seed} is not among the suite's seeds ({', '.join(map(str, seeds))}); left out"
               for m, names in found.items() for slug, seed in names if seed not in seeds]
    found = {m: [(slug, seed) for slug, seed in names if seed in seeds] for m, names in found.items()}
    found = {m: names for m, names in found.items() if names or m in declared_methods}
    methods = order_methods(sorted(set(found) | set(declared_methods)), declared_methods)
    found_slugs = {slug for names in found.values() for slug, _ in names}
    slugs = [str(s) for s in declared_prompts] + sorted(found_slugs - set(map(str, declared_prompts)))
    if not methods or not slugs:
        raise HifaError(f"no runs found in {root} (expected {runs_dir}/<method>/<prompt-slug>/ or a suite.json naming methods and prompts)")
    runs = {(m, s, seed): read_run(runs_dir / m / run_name(s, seed), m, s, seed) for m in methods for s in slugs for seed in seeds}
    prompts = {}
    for slug in slugs:
        named = declared_prompts.get(slug) or next((run.prompt for (_, s, _), run in runs.items() if s == slug and run.prompt), "")
        prompts[slug] = str(named or slug.replace("-", " "))
        for (_, s, _), run in runs.items():
            if s == slug:
                run.prompt = run.prompt or prompts[slug]
    keys = sort_metrics(sorted({k for run in runs.values() for k in run.metrics}))
    notes: dict[str, str] = {}
    versions: dict = {}
    for run in runs.values():
        for key, note in run.notes.items():
            if notes.setdefault(key, note) != note and not notes[key].startswith("varies"):
                notes[key] = f"varies across runs (e.g. {notes[key]}, {note})"
        versions = versions or run.versions
    description = str(meta["description"]) if meta.get("description") else None
    return Suite(root, str(meta.get("suite") or root.name), meta.get("world"), methods, slugs, prompts, runs, keys, notes, versions,
                 description, seeds, ignored)
