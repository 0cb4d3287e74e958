"""`hifa check-suites -`: the Snakefile's suites on stdin (workflow/rules/common.smk, check_suites), their shape
checked before any setting: a malformed payload is one `hifa: error:` line and exit status 2, never a traceback."""

from __future__ import annotations

import io
import json

import pytest

from hifa.cli import main

GOOD = {"suite": "demo", "prior": "oracle", "budget": None, "prompts": {"a-green-torus": "a green torus"},
        "methods": {"hifa": ["iterations=4", "tracking.experiment=demo"]}}
BAD = [
    ({}, "the suites to check (-) must be a JSON list, got {}"),
    ("demo", "the suites to check (-) must be a JSON list, got \"demo\""),
    ([5], "suites[0] must be an object, got 5"),
    ([{}], "suites[0].suite must be a non-empty string, got null"),
    ([{**GOOD, "suite": ""}], "suites[0].suite must be a non-empty string, got \"\""),
    ([{**GOOD, "prior": 5}], "suites[0].prior must be a non-empty string, got 5"),
    ([{**GOOD, "budget": 5}], "suites[0].budget must be a non-empty string or null, got 5"),
    ([{**GOOD, "prompts": ["a green torus"]}], "suites[0].prompts must be an object, got [\"a green torus\"]"),
    ([{**GOOD, "prompts": {"x": 5}}], "suites[0].prompts[\"x\"] must be a string, got 5"),
    ([{**GOOD, "methods": ["hifa"]}], "suites[0].methods must be an object, got [\"hifa\"]"),
    ([{**GOOD, "methods": {"hifa": [5]}}], "suites[0].methods[\"hifa\"] must be a list of KEY=VALUE strings, got [5]"),
    ([{**GOOD, "methods": {"hifa": "iterations=4"}}],
     "suites[0].methods[\"hifa\"] must be a list of KEY=VALUE strings, got \"iterations=4\""),
    # The shape of every suite comes first: suite 0's bad setting is not reached.
    ([{**GOOD, "methods": {"hifa": ["nope=1"]}}, 5], "suites[1] must be an object, got 5"),
]


def check(monkeypatch, payload) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(payload)))
    return main(["check-suites", "-"])


@pytest.mark.parametrize("payload, message", BAD, ids=[json.dumps(p)[:60] for p, _ in BAD])
def test_a_malformed_payload_is_one_line_naming_the_bad_element(monkeypatch, capsys, payload, message):
    assert check(monkeypatch, payload) == 2
    assert capsys.readouterr() == ("", f"hifa: error: {message}\n")


def test_the_snakefiles_payload_is_checked(monkeypatch, capsys):
    assert check(monkeypatch, [GOOD, {**GOOD, "suite": "full", "budget": "full"}]) == 0
    assert capsys.readouterr().out == "checked 2 suites: settings and prompts are valid\n"


def test_a_bad_setting_still_names_its_suite_and_method(monkeypatch, capsys):
    assert check(monkeypatch, [{**GOOD, "methods": {"hifa": ["iterations=four"]}}]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hifa: error: suite demo, method hifa: config 'iterations'") and err.count("\n") == 1
