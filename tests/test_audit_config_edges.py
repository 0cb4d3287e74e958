"""Config coercion, overrides, YAML loading and validation at their edges (values derived from the documented rules)."""

import math

import pytest

from hifa.config import OptimConfig, RegulariserConfig, TrainConfig, as_read_today
from hifa.configio import apply_overrides, changed_keys, coerce, from_dict, load_yaml, shorten, to_dict, trained_changes
from hifa.errors import ConfigError


@pytest.mark.parametrize("value, annotation", [(True, int), (False, int), (2.5, int), (True, float), (math.inf, float),
                                               (-math.inf, float), (math.nan, float), (".inf", float), (None, str), ([1], str),
                                               ("30,90,120", tuple[float, float]), ([1.0], tuple[float, float]), ("maybe", bool)])
def test_values_that_do_not_fit_the_annotation_are_refused(value, annotation):
    with pytest.raises(ConfigError, match="config 'some.key'"):
        coerce(value, annotation, "some.key")


@pytest.mark.parametrize("value, annotation, expected", [(4.0, int, 4), (" 12 ", int, 12), ("1e-3", float, 1e-3), (3, float, 3.0),
                                                         ("off", bool, False), ("1", bool, True), ("Yes", bool, True),
                                                         ("none", float | None, None), ("~", float | None, None),
                                                         ("NULL", float | None, None), ("30,90", tuple[float, float], (30.0, 90.0)),
                                                         (5, str, "5")])
def test_values_that_fit_are_converted(value, annotation, expected):
    got = coerce(value, annotation, "k")
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("override", ["iterations=true", "iterations=2.5", "regularisers.zvar=.inf", "optim.lr=.nan",
                                      "cameras.polar_deg=30,90,120", "optim.lr=true"])
def test_bad_override_values_are_config_errors(override):
    data = apply_overrides(to_dict(TrainConfig()), [override])
    with pytest.raises(ConfigError, match=f"config '{override.split('=')[0]}'"):
        from_dict(TrainConfig, data)


def test_text_overrides_keep_the_text_as_typed():
    data = {"prompt": "x", "iterations": 3}
    assert apply_overrides(data, ["prompt=yes"]) == {"prompt": "yes", "iterations": 3}
    assert apply_overrides(data, ["prompt=1e3"])["prompt"] == "1e3"
    assert apply_overrides(data, ["prompt=a=b c"])["prompt"] == "a=b c"
    assert apply_overrides(data, ["iterations=7"])["iterations"] == 7


def test_an_override_into_a_null_section_names_the_section():
    with pytest.raises(ConfigError, match="config 'renderer': holds None"):
        apply_overrides({"renderer": None}, ["renderer.num_coarse=8"])


def test_a_nested_section_error_names_the_full_key():
    with pytest.raises(ConfigError) as info:
        from_dict(TrainConfig, {"field": {"grid": {"n_levels": 0}}})
    assert info.value.key == "field.grid.n_levels"


def test_an_empty_config_file_is_an_empty_mapping(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set\n")
    assert load_yaml(empty) == {}


def test_keys_equal_in_python_but_not_in_yaml_are_not_duplicates(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("1: a\ntrue: b\n")
    assert isinstance(load_yaml(path), dict)  # no "given twice": 1 and true are different YAML keys
    path.write_text("1: a\n1: b\n")
    with pytest.raises(ConfigError, match="given twice"):
        load_yaml(path)


def test_shorten_keeps_a_repr_of_exactly_the_limit():
    assert shorten("a" * 58) == repr("a" * 58)  # 60 characters with its quotes
    assert shorten("a" * 59) == repr("a" * 59)[:60] + "... (61 characters)"


def test_mesh_and_tracking_changes_are_not_trained_changes():
    old = {"iterations": 10, "mesh": {"threshold": 1.0}, "tracking": {"enabled": True}}
    new = {"iterations": 10, "mesh": {"threshold": 2.0}, "tracking": {"enabled": False}}
    assert trained_changes(old, new) == []
    assert trained_changes(old, {**new, "iterations": 11}) == ["iterations"]
    assert changed_keys({"a": 1}, {"a": 1, "b": {"c": 2}})[2] == ["b.c"]
    assert changed_keys({"a": 1, "d": 0}, {"a": 1})[2] == ["d"]


@pytest.mark.parametrize("key, good, bad", [("resolution", 8, 7), ("seed", 2**63 - 1, 2**63), ("seed", 0, -1),
                                            ("device", "cuda:1", "cuda:"), ("textureless_rate", 1.0, 1.01),
                                            ("random_background_rate", 1.0, 1.01), ("eval_views", 1, 0), ("val_views", 1, 0)])
def test_train_settings_at_their_limits(key, good, bad):
    assert getattr(TrainConfig(**{key: good}), key) == good
    with pytest.raises(ConfigError, match=f"config '{key}'"):
        TrainConfig(**{key: bad})


@pytest.mark.parametrize("cls, key, good, bad", [(OptimConfig, "ema_decay", 0.999, 1.0), (OptimConfig, "grad_clip", 1e-6, 0.0),
                                                 (OptimConfig, "warmup_steps", 0, -1),
                                                 (RegulariserConfig, "orientation_ray_fraction", 1.0, 0.0),
                                                 (RegulariserConfig, "sample_entropy", 0.0, -1e-3),
                                                 (RegulariserConfig, "orientation", 0.0, -1e-3)])
def test_section_settings_at_their_limits(cls, key, good, bad):
    assert getattr(cls(**{key: good}), key) == good
    with pytest.raises(ConfigError, match=key):
        cls(**{key: bad})


def test_an_old_config_reads_with_defaults_and_one_that_no_longer_parses_reads_as_saved():
    saved = to_dict(TrainConfig(iterations=5))
    del saved["optim"]["ema_decay"]
    today = as_read_today(saved)
    assert today["iterations"] == 5 and today["optim"]["ema_decay"] is None
    gone = {**to_dict(TrainConfig()), "removed_setting": 1}
    assert as_read_today(gone) is gone
