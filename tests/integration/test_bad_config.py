"""Bad configuration: one line on stderr naming the problem, exit status 2, nothing launched.

Most cases call ``main()`` in this process (fast); a few run the real command to prove the
process itself prints no traceback. Either way a fake ``claude`` that records every launch
stands ready, so "nothing launched" is checked, not assumed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from faultlib import HUGE, fake_claude, run_orchestrator, sim_usage, usage_of, write_config

from orchestrator.cli import main

GOOD_INSTANCE = {"name": "a", "command": "/a"}
Capture = pytest.CaptureFixture[str]


def check_refused(tmp_path: Path, capsys: Capture, argv: list[str], *expected: str) -> str:
    """Run ``main(argv)`` with a launch-recording claude; it must refuse with one line."""
    claude = fake_claude(tmp_path)
    code = main([*argv, "--claude-bin", str(claude.path)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("orchestrator: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    assert claude.pids() == []
    return err.strip()


def config_with(tmp_path: Path, budget: dict[str, object] | None = None, **instance: object) -> str:
    return str(write_config(tmp_path, [{**GOOD_INSTANCE, **instance}], budget))


# -- the config file -------------------------------------------------------------------------


def test_malformed_json_names_file_line_and_column(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"instances": [\n  {"name": "a", "command": "/a",}\n]}\n')
    err = check_refused(tmp_path, capsys, ["--config", str(path)], "malformed JSON")
    assert re.search(rf"{re.escape(str(path))}:2:\d+: malformed JSON", err), err


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"instances": [GOOD_INSTANCE], "budgets": {}}, ["unknown key 'budgets'", "budget"]),
        (
            {"instances": [{**GOOD_INSTANCE, "comand": "/b"}]},
            ["instances[0]", "unknown key 'comand'", "allowed: name, command, prompt"],
        ),
        (
            {"instances": [GOOD_INSTANCE], "budget": {"overall": 5}},
            ["budget: unknown key 'overall'", "overall_budget"],
        ),
    ],
    ids=["top level", "instance", "budget block"],
)
def test_unknown_keys_are_named_with_the_allowed_ones(
    tmp_path: Path, capsys: Capture, data: dict[str, object], expected: list[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    check_refused(tmp_path, capsys, ["--config", str(path)], *expected)


@pytest.mark.parametrize(
    ("instances", "expected"),
    [
        ([{"name": "a"}], "instances[0]: missing 'command' (a slash command) or 'prompt'"),
        ([{"name": "a", "command": "   "}], "missing 'command'"),
        ([{"name": "a", "command": "/a", "prompt": "hi"}], "'command' or 'prompt', not both"),
        ([GOOD_INSTANCE, {"name": "a", "prompt": "hi"}], "duplicate instance name 'a'"),
        ([], "'instances' must be a non-empty list"),
        ([{"name": 7, "command": "/a"}], "'name' must be a string, not 7"),
    ],
    ids=["missing", "blank", "both", "duplicate name", "no instances", "name not text"],
)
def test_bad_instances(
    tmp_path: Path, capsys: Capture, instances: list[object], expected: str
) -> None:
    path = write_config(tmp_path, instances)
    check_refused(tmp_path, capsys, ["--config", str(path)], expected)


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"command_budgets": {"/a": 0}}, "'command_budgets./a' must be a number > 0, not 0"),
        ({"command_budgets": {"/a": -5}}, "must be a number > 0, not -5"),
        (
            {"command_budgets": {"/a": "lots"}},
            "'command_budgets./a': limit 'lots' is not a number like 50000, 50k",
        ),
        ({"command_budgets": {"/a": True}}, "must be a number > 0, not True"),
        ({"command_budgets": {"/a": 1.5}}, "must be a whole number of tokens, not 1.5"),
        ({"command_budgets": {" ": 5}}, "'command_budgets' has an empty key"),
        ({"command_budgets": [5]}, "'command_budgets' must be an object of key: limit"),
        ({"overall_budget": 0}, "'overall_budget' must be a number > 0, not 0"),
        ({"overall_cost_budget": -1}, "'overall_cost_budget' must be a number of USD > 0"),
        (
            {"command_cost_budgets": {"/a": "$2k"}},  # "$2" reads as $2.00, as on the command line
            "'command_cost_budgets./a': limit '$2k' is not a plain amount",
        ),
        ({"enforcement_mode": "strict"}, "enforcement mode 'strict' is not one of warn, block"),
        ({"enforcement_mode": None}, "enforcement mode None is not one of warn, block"),
    ],
    ids=[
        "zero",
        "negative",
        "not a number",
        "boolean",
        "fraction of a token",
        "empty key",
        "not a table",
        "overall zero",
        "overall cost negative",
        "cost not a number",
        "unknown mode",
        "null mode",
    ],
)
def test_bad_budgets_in_the_file(
    tmp_path: Path, capsys: Capture, budget: dict[str, object], expected: str
) -> None:
    check_refused(tmp_path, capsys, ["--config", config_with(tmp_path, budget)], expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "config file not found"),
        ("[1, 2]", "the top level must be an object with 'instances'"),
        (b"\xff\xfe{}", "cannot read config file"),
    ],
    ids=["missing file", "not an object", "not UTF-8"],
)
def test_unusable_config_files(
    tmp_path: Path, capsys: Capture, text: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "config.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    check_refused(tmp_path, capsys, ["--config", str(path)], str(path), expected)


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--command-budget", "/a=0"], "budget '/a=0': limit '0' is zero"),
        (["--command-budget", "/a=-5"], "budget '/a=-5': limit '-5' is negative"),
        (["--command-budget", "/a=lots"], "limit 'lots' is not a number like 50000, 50k"),
        (["--command-budget", "=50k"], "budget '=50k' has no key before '='"),
        (["--command-budget", "/a="], "budget '/a=': the limit is empty"),
        (["--command-budget", "/a"], "budget '/a' must look like KEY=LIMIT"),
        (["--command-budget", "/a=1.5"], "is not a whole number of tokens"),
        (["--overall-token-budget", "0"], "limit '0' is zero"),
        (["--overall-token-budget", "-1"], "limit '-1' is negative"),
        (["--overall-token-budget", "many"], "limit 'many' is not a number"),
        (["--overall-cost-budget", "0"], "limit '0' is zero"),
        (["--command-cost-budget", "/a=-2"], "limit '-2' is negative"),
        (["--command-cost-budget", "=2"], "has no key before '='"),
        (["--budget-enforcement-mode", "strict"], "invalid choice: 'strict'"),
        (["--max-concurrent", "0"], "argument --max-concurrent: '0' must be >= 1"),
        (["--timeout", "0"], "argument --timeout: '0' must be > 0"),
        (["--timeout", "soon"], "argument --timeout: 'soon' is not a number"),
        (["--startup-delay", "-1"], "'-1' must be >= 0"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_flags(tmp_path: Path, capsys: Capture, flags: list[str], expected: str) -> None:
    check_refused(tmp_path, capsys, ["/a", *flags], expected)


def test_a_bad_flag_wins_over_a_good_file(tmp_path: Path, capsys: Capture) -> None:
    path = config_with(tmp_path, {"command_budgets": {"/a": 1000}, "enforcement_mode": "block"})
    check_refused(tmp_path, capsys, ["--config", path, "--command-budget", "/a=0"], "is zero")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "nothing to run: give a COMMAND, --config FILE or --demo"),
        (["   "], "nothing to run"),
        (["/a", "--config", "x.json"], "give a COMMAND or --config, not both"),
        (["--demo", "/a"], "--demo runs its own instances"),
        (["/a", "--workspace", "/no/such/dir"], "--workspace /no/such/dir: does not exist"),
    ],
    ids=["nothing", "blank command", "command and config", "demo and command", "workspace"],
)
def test_bad_usage(tmp_path: Path, capsys: Capture, argv: list[str], expected: str) -> None:
    check_refused(tmp_path, capsys, argv, expected)


# -- what is not an error --------------------------------------------------------------------


@pytest.mark.parametrize("where", ["flag", "file"])
def test_a_budget_no_instance_uses_is_a_warning_and_the_run_goes_on(
    tmp_path: Path, where: str
) -> None:
    claude = fake_claude(tmp_path)
    args = ["--claude-bin", str(claude.path), "--overall-token-budget", str(HUGE)]
    if where == "flag":
        args += ["/a", "--command-budget", "/nobody=50k"]
    else:
        args += ["--config", config_with(tmp_path, {"command_budgets": {"/nobody": 50_000}})]
    result = run_orchestrator(args, tmp_path)

    warnings = [line for line in result.stdout.splitlines() if "applies to no instance" in line]
    expected = "WARNING budget /nobody applies to no instance (no instance's key is /nobody)"
    assert warnings == [expected]
    assert result.code == 0 and result.stderr == "", result
    assert usage_of(result.instance("a")["tokens"]) == sim_usage()
    assert len(claude.pids()) == 1


# -- the real process: exit status 2, one line, no traceback ---------------------------------


@pytest.mark.parametrize(
    "case", ["malformed JSON", "unknown key", "bad flag value", "unknown mode flag"]
)
def test_the_process_itself_exits_2_without_a_traceback(tmp_path: Path, case: str) -> None:
    claude = fake_claude(tmp_path)
    path = tmp_path / "config.json"
    path.write_text('{"instances": [{"name": "a", "command": "/a", "bogus": 1}]}')
    if case == "malformed JSON":
        path.write_text('{"instances": [')
    args = ["--config", str(path), "--claude-bin", str(claude.path)]
    if case == "bad flag value":
        write_config(tmp_path, [GOOD_INSTANCE])
        args += ["--command-budget", "/a=-1"]
    elif case == "unknown mode flag":
        write_config(tmp_path, [GOOD_INSTANCE])
        args += ["--budget-enforcement-mode", "panic"]
    result = run_orchestrator(args, tmp_path)

    assert result.code == 2, result
    assert result.stdout == "" and result.summary is None
    assert result.stderr.startswith("orchestrator: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert claude.pids() == []
