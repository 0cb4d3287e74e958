"""Issue 8.3, hostile configs (property-based): every malformed config, whether a YAML mapping, a
`--set KEY=VALUE` or a YAML file, gives one ConfigError line naming the key; none gives a traceback,
and every accepted config round-trips through `--print-config` YAML unchanged."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hifa import cli
from hifa.config import TrainConfig
from hifa.configio import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from hifa.errors import ConfigError, HifaError, printable

import os
EXAMPLES = int(os.environ.get("HIFA_CONFIG_EXAMPLES", "400"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def base() -> dict:
    from hifa.training import resolve_config

    return to_dict(resolve_config("hifa", "a green torus", "oracle"))


BASE = base()


def paths(tree: dict, prefix: tuple = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in tree.items():
        found.append((*prefix, key))
        if isinstance(value, dict):
            found += paths(value, (*prefix, key))
    return found


PATHS = paths(BASE)


def get(tree: dict, path: tuple):
    for part in path:
        tree = tree[part]
    return tree


SECTIONS = [()] + [p for p in PATHS if isinstance(get(BASE, p), dict)]

TEXT = st.text(max_size=20)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["", "null", "~", "1e3", "-1", "0", "nan", "inf", "-inf", "true", "yes", "1,2", "[1, 2]", "{a: 1}", "²",
                     "١٢", "0x10", "1_000", "  7 ", "../../etc", "$(touch x)", "\n", "9" * 5000]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.dictionaries(st.one_of(TEXT, st.integers(), st.booleans()), SCALARS, max_size=3),
)
KEYS = st.one_of(TEXT, st.integers(), st.booleans(), st.none(), st.sampled_from(["iterations ", "Iterations", "optim.lr", "__class__"]))


@st.composite
def mutated(draw) -> tuple[dict, str, tuple]:
    """(config dict, kind of mutation, the path it touched)."""
    data = copy.deepcopy(BASE)
    kind = draw(st.sampled_from(["set", "set", "set", "unknown", "delete"]))
    if kind == "unknown":
        section = draw(st.sampled_from(SECTIONS))
        key = draw(KEYS)
        node = get(data, section)
        if key in node:
            return data, "noop", section
        node[key] = draw(VALUES)
        return data, kind, (*section, key)
    path = draw(st.sampled_from(PATHS))
    parent = get(data, path[:-1])
    if kind == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(VALUES)
    return data, kind, path


def check_error(exc: ConfigError, kind: str, path: tuple) -> None:
    message = str(exc)
    assert "\n" not in message and message.startswith(f"config '{exc.key}': ") and len(message) < 800, message
    dotted = ".".join(str(p) for p in path)
    if kind == "unknown":
        section = ".".join(str(p) for p in path[:-1])
        assert exc.key.startswith(section) and "unknown key" in message, (message, dotted)
        return
    parent = ".".join(str(p) for p in path[:-1])
    # the key itself, the section it sits in (not a mapping), or a sibling checked together with it
    same_section = exc.key.rsplit(".", 1)[0] == parent if "." in exc.key else parent == ""
    inside = exc.key.startswith(dotted + ".")  # a key inside the mapping put there
    assert exc.key == dotted or dotted.startswith(exc.key + ".") or inside or same_section, (message, dotted)


def accepted(config: TrainConfig) -> None:
    """An accepted config is a whole TrainConfig that survives --print-config and back."""
    text = dump_yaml(config)
    assert from_dict(TrainConfig, yaml.safe_load(text)) == config


@SETTINGS
@given(mutated())
def test_a_mutated_config_mapping_is_accepted_or_one_line_naming_the_key(case):
    data, kind, path = case
    try:
        config = from_dict(TrainConfig, data)
    except ConfigError as exc:
        check_error(exc, kind, path)
    else:
        accepted(config)


OVERRIDE_KEYS = st.one_of(st.sampled_from([".".join(p) for p in PATHS]), TEXT, st.sampled_from(["", ".", "optim.", ".lr", "optim..lr", "prompt.x"]))
RAW = st.one_of(TEXT, st.sampled_from(["", "null", "[1, 2", "{a: 1}", "!!python/object/apply:os.system ['touch PWNED']", "'", "- a", "a: b",
                                       "nan", "1e400", "\t", "=", "a=b", "%", "*anchor"]))


@SETTINGS
@given(st.lists(st.tuples(OVERRIDE_KEYS, RAW, st.booleans()), min_size=1, max_size=3))
def test_set_overrides_are_accepted_or_one_line_naming_the_key(items):
    overrides = [f"{key}={value}" if with_eq else key for key, value, with_eq in items]
    try:
        config = from_dict(TrainConfig, apply_overrides(BASE, overrides))
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"config '{exc.key}': "), message
        named = [printable(k.strip()) for k, _, _ in items] + [printable(f"{k}={v}") for k, v, _ in items]
        assert any(exc.key == n or n.startswith(exc.key + ".") or exc.key.startswith(n.rsplit(".", 1)[0]) or exc.key in n for n in named), (message, items)
    else:
        accepted(config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), st.builds(lambda d: yaml.safe_dump(d), st.dictionaries(TEXT, VALUES, max_size=4))))
def test_a_yaml_file_is_a_mapping_or_one_line(tmp_path_factory, text):
    from hifa.training import resolve_config

    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_yaml(path)
        config = resolve_config("hifa", "a green torus", "oracle", config_file=str(path))
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("config '"), str(exc)
    else:
        assert isinstance(loaded, dict)
        accepted(config)


BAD_CLI = [
    (["--set", "iterations=0"], "config 'iterations': must be positive"),
    (["--set", "optim.lr=nan"], "config 'optim.lr': expected a finite number"),
    (["--set", "field.grid.n_levels=0"], "config 'field.grid.n_levels': must be >= 1"),
    (["--set", "prior.oracle.views=-3"], "config 'prior.oracle.views': must be positive"),
    (["--set", "seed=99999999999999999999"], "config 'seed': must lie in [0, 2^63)"),
    (["--set", "cameras.radius=[3, 2]"], "config 'cameras.radius': range must be (low, high) with low <= high"),
    (["--set", "renderer=5"], "config 'renderer': expected a mapping of keys"),
    (["--set", "renderer.num_coarse.x=1"], "config 'renderer.num_coarse': holds 48, not a section of keys, so 'renderer.num_coarse.x' names nothing"),
    (["--set", "renderers.num_coarse=1"], "config 'renderers': unknown key (not a section)"),
    (["--set", "resolution"], "config 'resolution': an override looks like key.subkey=value"),
    (["--set", "iterations=²"], "config 'iterations': expected an integer"),
]


@pytest.mark.parametrize("args,message", BAD_CLI)
def test_print_config_errors_are_one_line(args, message, capsys):
    code = cli.main(["train", "--prompt", "a green torus", "--prior", "oracle", "--print-config", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"hifa: error: {message}"), err


def test_a_yaml_file_with_non_text_keys_names_them(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    path.write_text("1: 2\ntrue: 3\niterations: 5\n")
    code = cli.main(["train", "--prompt", "a green torus", "--prior", "oracle", "--print-config", "--config", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hifa: error: config '1': unknown key"), err


def test_text_settings_keep_the_text_as_typed(tmp_path, capsys):
    data = apply_overrides(BASE, ["prompt=yes", "tracking.experiment=123", "tracking.tracking_uri=null", "prior.model=null"])
    config = from_dict(TrainConfig, data)
    assert config.prompt == "yes" and config.tracking.experiment == "123" and config.prior.model == "null"
    assert config.tracking.tracking_uri is None  # an optional text: null is "not set"
    path = tmp_path / "null.yaml"
    path.write_text("tracking:\n  experiment: null\n")  # YAML null for a text setting is not the text 'None'
    code = cli.main(["train", "--prompt", "a green torus", "--prior", "oracle", "--print-config", "--config", str(path)])
    assert code == 2 and capsys.readouterr().err == "hifa: error: config 'tracking.experiment': expected text, got null\n"
    with pytest.raises(HifaError, match="not UTF-8 text"):
        (tmp_path / "latin1.yaml").write_bytes("prompt: caf\xe9\n".encode("latin-1"))
        load_yaml(tmp_path / "latin1.yaml")


# --- the workflow's config schema ------------------------------------------------------------------

SMOKE = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "suites" / "smoke.yaml").read_text())
SCHEMA = str(Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml")
SUITE_PATHS = paths(SMOKE)


@st.composite
def mutated_suite(draw) -> dict:
    data = copy.deepcopy(SMOKE)
    path = draw(st.sampled_from(SUITE_PATHS))
    parent = get(data, path[:-1])
    if draw(st.booleans()):
        parent[path[-1]] = draw(VALUES)
    else:
        del parent[path[-1]]
    return data


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(mutated_suite())
def test_workflow_schema_accepts_or_names_the_place(data):
    """What workflow/rules/common.smk's validate_config does: snakemake.utils.validate, then one line
    `invalid config at <path>: <message>` from jsonschema's best match; never another exception."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(copy.deepcopy(data), SCHEMA)
    except WorkflowError as exc:
        cause = exc.__cause__ or exc.__context__
        assert isinstance(cause, jsonschema.ValidationError), repr(exc)
        err = jsonschema.exceptions.best_match([cause] + list(cause.context or []))
        line = f"invalid config at {'.'.join(str(p) for p in err.absolute_path) or '(top level)'}: {err.message}"
        assert "\n" not in line, line
