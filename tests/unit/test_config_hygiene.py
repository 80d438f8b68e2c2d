"""Config files as a hostile user writes them: duplicate keys, numbers JSON should not
hold, control characters in names and keys, and argv the OS would refuse."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.config import (
    MAX_ARG_STRLEN,
    ConfigError,
    argument_problem,
    command_line_problem,
    load_config_file,
)


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message.removeprefix(f"{path}: ")


def config(instance: dict[str, object], budget: dict[str, object] | None = None) -> str:
    data: dict[str, object] = {"instances": [{"command": "/a", **instance}]}
    if budget is not None:
        data["budget"] = budget
    return json.dumps(data)


# -- duplicate keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"instances": [{"command": "/a", "name": "x", "name": "y"}]}',
            "instances[0]: key 'name' is given twice ('x', then 'y'); give each key once",
        ),
        (
            '{"instances": [{"command": "/a"}], "budget": '
            '{"command_budgets": {"/a": 900000, "/a": 100}}}',
            "budget.command_budgets: key '/a' is given twice (900000, then 100)",
        ),
        (
            '{"instances": [{"command": "/a"}], "instances": [{"command": "/b"}]}',
            "the top level: key 'instances' is given twice ([...], then [...])",
        ),
        (
            # The first "budget" (with its own duplicate) was replaced: the top one is named.
            '{"instances": [{"command": "/a"}], "budget": {"overall_budget": 1, '
            '"overall_budget": 2}, "budget": {}}',
            "the top level: key 'budget' is given twice ({...}, then {...})",
        ),
    ],
    ids=["instance", "budget table", "top level", "inside a replaced value"],
)
def test_a_key_given_twice_is_refused_naming_where_and_both_values(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert refused(tmp_path, text).startswith(expected)


def test_a_budget_key_twice_after_trimming_is_refused(tmp_path: Path) -> None:
    text = config({}, {"command_budgets": {"/a": 5000, " /a ": 100}})
    assert refused(tmp_path, text) == (
        "budget: 'command_budgets' gives '/a' twice (5000, then 100); give each key once"
    )


# -- numbers -----------------------------------------------------------------------------------


NUMBER_PLACES = {
    # the key the error names: where the number sits
    "'overall_budget'": '"budget": {"overall_budget": N}',
    "'overall_cost_budget'": '"budget": {"overall_cost_budget": N}',
    "'command_budgets./a'": '"budget": {"command_budgets": {"/a": N}}',
    "'command_cost_budgets./a'": '"budget": {"command_cost_budgets": {"/a": N}}',
    "'max_tokens_per_command'": '"max_tokens_per_command": N',
}


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "1" * 5000])
@pytest.mark.parametrize(("key", "place"), NUMBER_PLACES.items(), ids=NUMBER_PLACES.keys())
def test_a_number_that_is_not_finite_or_too_large_names_its_key(
    tmp_path: Path, number: str, key: str, place: str
) -> None:
    # Python's json takes NaN, Infinity and 1e400 (inf); 5,000 digits exceed int()'s limit.
    setting = place.replace("N", number)
    if setting.startswith('"budget"'):
        text = '{"instances": [{"command": "/a"}], ' + setting + "}"
    else:
        text = '{"instances": [{"command": "/a", ' + setting + "}]}"
    message = refused(tmp_path, text)
    assert f"{key} must be a number" in message, message


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"overall_budget": 10**15 + 1}, "'overall_budget' must be a number > 0, not "),
        ({"overall_cost_budget": 1e9 + 1}, "'overall_cost_budget' must be a number of USD > 0"),
        ({"command_cost_budgets": {"/a": 1e-400}}, "not 0.0"),
    ],
)
def test_limits_out_of_range_are_refused(
    tmp_path: Path, budget: dict[str, object], expected: str
) -> None:
    assert expected in refused(tmp_path, config({}, budget))


def test_the_largest_limits_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(config({}, {"overall_budget": 10**15, "overall_cost_budget": 1e9}))
    _, budget = load_config_file(path)
    assert (budget.overall_tokens, budget.overall_usd) == (10**15, 1e9)


def test_json_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    text = '{"instances": [{"command": "/a"}], "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert refused(tmp_path, text) == "the JSON is nested too deeply"


# -- lists -------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["allowed_tools", "claude_args"])
@pytest.mark.parametrize("value", ["Read Grep", ["Read", 5], {"a": "b"}])
def test_list_keys_must_be_lists_of_strings(tmp_path: Path, key: str, value: object) -> None:
    message = refused(tmp_path, config({key: value}))
    assert f"instances[0]: '{key}' must be a list of strings like [" in message


# -- names and budget keys ---------------------------------------------------------------------


CONTROLS = {
    "newline": ("\n", "a control character (U+000A)"),
    "tab": ("\t", "a control character (U+0009)"),
    "ESC": ("\x1b", "a control character (U+001B)"),
    "right-to-left override": ("\u202e", "an unprintable character (U+202E)"),
    "line separator": ("\u2028", "an unprintable character (U+2028)"),
    "lone surrogate": ("\ud800", "an unprintable character (U+D800)"),
}


@pytest.mark.parametrize(("char", "described"), CONTROLS.values(), ids=CONTROLS.keys())
@pytest.mark.parametrize("key", ["name", "budget_key"])
def test_names_and_budget_keys_with_control_characters_are_refused(
    tmp_path: Path, char: str, described: str, key: str
) -> None:
    message = refused(tmp_path, config({key: f"x{char}y"}))
    assert message.startswith("instances[0]: ") and described in message, message


@pytest.mark.parametrize("char", ["\x1b", "\u202e", "\x7f"])
def test_a_budget_key_taken_from_the_command_is_checked_too(tmp_path: Path, char: str) -> None:
    message = refused(tmp_path, config({"command": f"/x{char}y src"}))
    assert message.startswith(f"instances[0]: budget key {f'/x{char}y'!r} contains "), message


def test_a_prompt_may_span_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(config({"command": "/a first line\nsecond\tline"}))
    [spec], _ = load_config_file(path)
    assert spec.budget_key == "/a" and "\n" in spec.prompt


@pytest.mark.parametrize(
    ("budget_key", "problem"),
    [
        ("/a=b", "contains '='"),
        ("/a b", "contains whitespace"),
        ("/a\u00a0b", "contains whitespace"),
        ("overall", "'overall' is the key of the overall budget"),
    ],
)
def test_bad_budget_keys_of_instances(tmp_path: Path, budget_key: str, problem: str) -> None:
    message = refused(tmp_path, config({"budget_key": budget_key}))
    assert problem in message and "else the first word of its slash command" in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("/a=", "contains '='"),
        ("/a b", "contains whitespace"),
        ("/a\nb", "a control character (U+000A)"),
        ("overall", "key of the overall budget"),
    ],
)
@pytest.mark.parametrize("table", ["command_budgets", "command_cost_budgets"])
def test_bad_keys_in_budget_tables(tmp_path: Path, key: str, problem: str, table: str) -> None:
    message = refused(tmp_path, config({}, {table: {key: 5}}))
    assert message.startswith(f"budget: '{table}': ") and problem in message


# -- what the OS refuses in argv ---------------------------------------------------------------


@pytest.mark.parametrize(
    "instance",
    [
        {"command": "/a\u0000b"},
        {"prompt": "hi\u0000"},
        {"model": "m\u0000"},
        {"session_id": "\u0000"},
        {"allowed_tools": ["Read", "Gr\u0000ep"]},
        {"claude_args": ["--x", "\u0000"]},
    ],
    ids=["command", "prompt", "model", "session_id", "allowed_tools", "claude_args"],
)
def test_a_nul_byte_in_anything_passed_to_claude_is_refused(
    tmp_path: Path, instance: dict[str, object]
) -> None:
    data = {"command": "/a", **instance} if "prompt" not in instance else instance
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"instances": [data]}))
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert "contains a NUL byte, which cannot be passed as an argument" in str(info.value)
    [key] = instance
    assert f"instances[0]: '{key if key != 'command' else 'prompt'}" in str(info.value)


def test_a_prompt_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, '{"instances": [{"prompt": "a\\ud800"}]}')
    assert message == (
        "instances[0]: 'prompt' holds '\\ud800', which cannot be passed as an argument"
    )


@pytest.mark.skipif(MAX_ARG_STRLEN is None, reason="only Linux limits one argument")
def test_one_argument_over_the_kernels_limit_is_refused(tmp_path: Path) -> None:
    assert MAX_ARG_STRLEN == 131_072
    assert argument_problem("x" * 131_071) is None  # the largest one execve takes
    assert argument_problem("x" * 131_072) == (
        "is 131,072 bytes; one argument may hold at most 131,071 (the system's MAX_ARG_STRLEN)"
    )
    assert argument_problem("é" * 65_536) is not None  # bytes count, not characters
    message = refused(tmp_path, json.dumps({"instances": [{"prompt": "x" * 200_000}]}))
    assert message.startswith("instances[0]: 'prompt' is 200,000 bytes")


def test_a_command_line_over_arg_max_is_refused() -> None:
    limit = os.sysconf("SC_ARG_MAX")
    args = ["x" * 100_000] * (limit // 100_000 + 1)
    problem = command_line_problem(["claude", *args])
    assert problem is not None and "over the system's limit" in problem and "ARG_MAX" in problem
    assert command_line_problem(["claude", *args[:5]]) is None
