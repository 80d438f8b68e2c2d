"""Run configuration: the JSON file, its errors, and how the command line overrides it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from budget_core import OVERALL, Unit
from orchestrator.cli import build_parser, build_run
from orchestrator.config import (
    BudgetConfig,
    ConfigError,
    InstanceSpec,
    RunConfig,
    default_budget_key,
    instance_argv,
    load_config_file,
    parse_config,
)
from orchestrator.run import budget_manager_for

ROOT = Path(__file__).resolve().parents[2]
WHERE = "c.json"


def parse(data: object) -> tuple[list[InstanceSpec], BudgetConfig]:
    return parse_config(data, WHERE)


def one(**keys: Any) -> InstanceSpec:
    [spec], _ = parse({"instances": [keys]})
    return spec


def budget(**keys: Any) -> BudgetConfig:
    _, config = parse({"instances": [{"command": "/a"}], "budget": keys})
    return config


def error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    message = str(info.value)
    assert message.startswith(WHERE)
    assert "\n" not in message
    return message


# -- budget keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "key"),
    [
        ("/analyze src", "/analyze"),
        ("  /review   a b ", "/review"),
        ("/test", "/test"),
        ("/", "inst"),  # a lone slash is no command
        ("explain this code", "inst"),
        ("", "inst"),
    ],
)
def test_default_budget_key(prompt: str, key: str) -> None:
    assert default_budget_key("inst", prompt) == key


# -- instances -----------------------------------------------------------------------------


def test_a_minimal_instance() -> None:
    spec = one(command="/analyze src")
    assert spec == InstanceSpec(name="instance-0", prompt="/analyze src", budget_key="/analyze")


def test_every_instance_key() -> None:
    spec = one(
        name=" api ",
        prompt="  look around  ",
        description="d",
        permission_mode="plan",
        allowed_tools=["Read", "Bash(git:*)"],
        session_id="s-1",
        model="claude-sonnet-4-5",
        max_tokens_per_command=5000,
        budget_key=" /k ",
        claude_args=["--max-turns", "3"],
    )
    assert spec == InstanceSpec(
        name="api",
        prompt="look around",
        budget_key="/k",
        description="d",
        permission_mode="plan",
        allowed_tools=("Read", "Bash(git:*)"),
        session_id="s-1",
        model="claude-sonnet-4-5",
        max_tokens=5000,
        claude_args=("--max-turns", "3"),
    )


def test_a_plain_prompt_is_budgeted_under_the_instance_name() -> None:
    assert one(name="docs", prompt="summarise docs").budget_key == "docs"


@pytest.mark.parametrize("key", ["allowed_tools", "claude_args"])
def test_a_list_key_given_as_one_string_is_refused_not_split(key: str) -> None:
    # Split on spaces, "--append-system-prompt 'be brief'" would become three arguments.
    message = error({"instances": [{"command": "/a", key: "--model opus"}]})
    assert f"'{key}' must be a list of strings like [" in message
    assert "not '--model opus'" in message


def test_default_names_follow_the_position() -> None:
    specs, _ = parse({"instances": [{"command": "/a"}, {"command": "/b"}]})
    assert [s.name for s in specs] == ["instance-0", "instance-1"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "top level must be an object"),
        ({}, "'instances' must be a non-empty list"),
        ({"instances": []}, "'instances' must be a non-empty list"),
        ({"instances": {"a": 1}}, "'instances' must be a non-empty list"),
        ({"instances": ["/a"]}, "instances[0]: each instance must be an object"),
        ({"instances": [{"command": "/a"}], "budgets": {}}, "unknown key 'budgets'"),
        ({"instances": [{"command": "/a", "cmd": "x"}]}, "instances[0]: unknown key 'cmd'"),
        ({"instances": [{}]}, "missing 'command'"),
        ({"instances": [{"command": "   "}]}, "missing 'command'"),
        ({"instances": [{"command": "/a", "prompt": "b"}]}, "not both"),
        ({"instances": [{"command": 5}]}, "'command' must be a string"),
        ({"instances": [{"command": "/a", "name": " "}]}, "'name' is empty"),
        ({"instances": [{"command": "/a", "budget_key": ""}]}, "'budget_key' is empty"),
        ({"instances": [{"command": "/a", "permission_mode": "yolo"}]}, "'yolo'"),
        ({"instances": [{"command": "/a", "allowed_tools": [1]}]}, "'allowed_tools'"),
        ({"instances": [{"command": "/a", "claude_args": {"a": 1}}]}, "'claude_args'"),
        ({"instances": [{"command": "/a", "max_tokens_per_command": 0}]}, "> 0"),
        ({"instances": [{"command": "/a", "max_tokens_per_command": 1.5}]}, "whole number"),
        ({"instances": [{"command": "/a", "max_tokens_per_command": True}]}, "> 0"),
        (
            {"instances": [{"name": "x", "command": "/a"}, {"name": "x", "command": "/b"}]},
            "duplicate instance name 'x'",
        ),
    ],
)
def test_bad_instances_are_named_in_the_error(data: object, fragment: str) -> None:
    assert fragment in error(data)


# -- the budget block ----------------------------------------------------------------------


def test_no_budget_block() -> None:
    _, config = parse({"instances": [{"command": "/a"}]})
    assert config == BudgetConfig()


def test_every_budget_key() -> None:
    config = budget(
        overall_budget=1_500_000,
        overall_cost_budget=10,
        command_budgets={" /analyze ": 600_000, "/review": 2e5},
        command_cost_budgets={"/tests": 4.5},
        enforcement_mode="block",
    )
    assert config == BudgetConfig(
        overall_tokens=1_500_000,
        overall_usd=10.0,
        command_tokens={"/analyze": 600_000, "/review": 200_000},
        command_usd={"/tests": 4.5},
        mode="block",
    )
    assert isinstance(config.command_tokens["/review"], int)


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ({"overall_budget": 0}, "'overall_budget' must be a number > 0"),
        ({"overall_budget": -5}, "'overall_budget'"),
        ({"overall_budget": "lots"}, "'overall_budget'"),  # "50k" reads as 50,000
        ({"overall_budget": 10.5}, "whole number"),
        ({"overall_cost_budget": 0}, "'overall_cost_budget'"),
        ({"overall_cost_budget": False}, "'overall_cost_budget'"),
        ({"command_budgets": {"/a": -1}}, "'command_budgets./a'"),
        ({"command_budgets": {"/a": None}}, "'command_budgets./a'"),
        ({"command_budgets": {" ": 5}}, "empty key"),
        ({"command_budgets": [5]}, "'command_budgets' must be an object"),
        ({"command_cost_budgets": {"/a": "1$"}}, "'command_cost_budgets./a'"),
        ({"enforcement_mode": "stop"}, "'stop' is not one of warn, block"),
        ({"enforcement_mode": None}, "None"),
        ({"overall": 5}, "unknown key 'overall'"),
    ],
)
def test_bad_budgets_are_named_in_the_error(keys: dict[str, Any], fragment: str) -> None:
    message = error({"instances": [{"command": "/a"}], "budget": keys})
    assert "budget" in message
    assert fragment in message


def test_the_budget_block_must_be_an_object() -> None:
    assert "budget: must be an object" in error({"instances": [{"command": "/a"}], "budget": 5})


# -- files ---------------------------------------------------------------------------------


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.json: config file not found"):
        load_config_file(tmp_path / "missing.json")


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"instances": [\n  {"command": "/a",}\n]}')
    with pytest.raises(ConfigError, match=r"c\.json:2:\d+: malformed JSON"):
        load_config_file(path)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"instances": [{"command": "/\xff"}]}')
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(path)


def test_errors_in_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"instances": [{"command": "/a", "colour": 1}]}))
    with pytest.raises(ConfigError, match=rf"^{path}: instances\[0\]: unknown key 'colour'"):
        load_config_file(path)


@pytest.mark.parametrize(
    "path",
    [
        ROOT / "examples" / "basic.json",
        ROOT / "examples" / "budgets.json",
        ROOT / "orchestrator" / "demo" / "demo.json",
    ],
    ids=lambda p: p.name,
)
def test_the_shipped_configs_are_valid(path: Path) -> None:
    instances, _ = load_config_file(path)
    assert instances


# -- the command line over the file --------------------------------------------------------


def run_config(tmp_path: Path, data: dict[str, Any], *args: str) -> RunConfig:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    argv = ["--config", str(path), f"--claude-bin={sys.executable}", *args]
    return build_run(build_parser().parse_args(argv))


FILE = {
    "instances": [{"name": "a", "command": "/analyze x"}, {"name": "r", "command": "/review"}],
    "budget": {
        "overall_budget": 1000,
        "overall_cost_budget": 5,
        "command_budgets": {"/analyze": 500, "/review": 300},
        "command_cost_budgets": {"/review": 1.5},
        "enforcement_mode": "block",
    },
}


def test_without_flags_the_file_holds(tmp_path: Path) -> None:
    run = run_config(tmp_path, FILE)
    assert run.budgets == BudgetConfig(1000, 5.0, {"/analyze": 500, "/review": 300},
                                       {"/review": 1.5}, "block")  # fmt: skip
    assert run.claude_cmd == (sys.executable,)
    assert run.max_concurrent == 4
    assert run.timeout_s is None


def test_flags_override_the_file_key_by_key(tmp_path: Path) -> None:
    run = run_config(
        tmp_path,
        FILE,
        "--command-budget=/analyze=50k",
        "--command-budget=/new=1.5M",
        "--command-cost-budget=/review=$2.50",
        "--overall-token-budget=2_000",
        "--overall-cost-budget=7.25",
        "--budget-enforcement-mode=warn",
        "--max-concurrent=2",
        "--timeout=30",
        "--claude-arg=--x",
        "--claude-arg=--y=1",
    )
    assert run.budgets == BudgetConfig(
        overall_tokens=2000,
        overall_usd=7.25,
        command_tokens={"/analyze": 50_000, "/review": 300, "/new": 1_500_000},
        command_usd={"/review": 2.5},
        mode="warn",
    )
    assert run.max_concurrent == 2
    assert run.timeout_s == 30
    assert run.extra_args == ("--x", "--y=1")


@pytest.mark.parametrize(
    ("flag", "first", "second"),
    [
        ("--command-budget", "/a=1k", "/a=2k"),
        ("--command-budget", "/a=1k", " /a =1k"),  # the same key, spelled differently
        ("--command-cost-budget", "/a=1", "/a=$2"),
    ],
)
def test_a_flag_key_given_twice_is_refused_naming_both(
    tmp_path: Path, flag: str, first: str, second: str
) -> None:
    # The last one silently winning could loosen a budget by accident.
    with pytest.raises(ConfigError) as info:
        run_config(tmp_path, FILE, f"{flag}={first}", f"{flag}={second}")
    assert str(info.value) == (
        f"{flag} /a is given twice ({first!r}, then {second!r}); give each key once"
    )


def test_one_key_may_have_a_token_and_a_cost_flag(tmp_path: Path) -> None:
    run = run_config(tmp_path, FILE, "--command-budget=/a=1k", "--command-cost-budget=/a=2")
    assert (run.budgets.command_tokens["/a"], run.budgets.command_usd["/a"]) == (1000, 2.0)


def test_a_command_gets_one_instance_named_for_it(tmp_path: Path) -> None:
    args = build_parser().parse_args(["/analyze src", f"--claude-bin={sys.executable}"])
    [spec] = build_run(args).instances
    assert (spec.name, spec.prompt, spec.budget_key) == ("analyze", "/analyze src", "/analyze")
    args = build_parser().parse_args(["fix the bug", f"--claude-bin={sys.executable}"])
    [spec] = build_run(args).instances
    assert (spec.name, spec.budget_key) == ("instance", "instance")


# -- budgets and argv built from a run -----------------------------------------------------


def budgets_of(run: RunConfig) -> dict[tuple[str, Unit], float]:
    return {(b.key, b.unit): b.limit for b in budget_manager_for(run).snapshot().budgets}


def test_the_budget_manager_gets_every_budget(tmp_path: Path) -> None:
    assert budgets_of(run_config(tmp_path, FILE)) == {
        (OVERALL, Unit.TOKENS): 1000,
        (OVERALL, Unit.USD): 5.0,
        ("/analyze", Unit.TOKENS): 500,
        ("/review", Unit.TOKENS): 300,
        ("/review", Unit.USD): 1.5,
    }
    assert budget_manager_for(run_config(tmp_path, FILE)).mode == "block"


def test_max_tokens_per_command_is_a_budget_for_the_key_the_strictest_wins(
    tmp_path: Path,
) -> None:
    data = {
        "instances": [
            {"name": "a1", "command": "/a x", "max_tokens_per_command": 900},
            {"name": "a2", "command": "/a y", "max_tokens_per_command": 700},
            {"name": "b", "command": "/b", "max_tokens_per_command": 100},
            {"name": "c", "command": "/c"},
        ],
        "budget": {"command_budgets": {"/b": 5000}},
    }
    assert budgets_of(run_config(tmp_path, data)) == {
        ("/b", Unit.TOKENS): 5000,  # an explicit budget wins over max_tokens_per_command
        ("/a", Unit.TOKENS): 700,
    }


def test_instance_argv() -> None:
    spec = InstanceSpec(
        name="n",
        prompt="/analyze src",
        budget_key="/analyze",
        permission_mode="plan",
        allowed_tools=("Read", "Grep"),
        session_id="s",
        model="m",
        claude_args=("--own",),
    )
    run = RunConfig((spec,), BudgetConfig(), ("py", "sim.py"), extra_args=("--all",))
    assert instance_argv(run, spec) == [
        "py", "sim.py", "-p", "--output-format", "stream-json", "--verbose",
        "--include-partial-messages", "--permission-mode", "plan", "--allowedTools", "Read",
        "Grep", "--session-id", "s", "--model", "m", "--own", "--all", "--", "/analyze src",
    ]  # fmt: skip
    bare = InstanceSpec(name="n", prompt="hi", budget_key="n")
    assert instance_argv(RunConfig((bare,), BudgetConfig(), ("claude",)), bare) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--include-partial-messages", "--", "hi",
    ]  # fmt: skip


@pytest.mark.parametrize("prompt", ["--help", "-x is a flag?", "--", "-p"])
def test_a_prompt_that_looks_like_an_option_comes_last_after_dashes(prompt: str) -> None:
    spec = InstanceSpec(name="n", prompt=prompt, budget_key="n", claude_args=("--own",))
    argv = instance_argv(RunConfig((spec,), BudgetConfig(), ("claude",)), spec)
    assert argv[-2:] == ["--", prompt]
    assert argv.index("--") == len(argv) - 2  # the first "--" ends the options


def test_instance_argv_without_partial_messages_for_an_old_cli() -> None:
    spec = InstanceSpec(name="n", prompt="hi", budget_key="n", model="m")
    run = RunConfig((spec,), BudgetConfig(), ("claude",), partial_messages=False)
    assert instance_argv(run, spec) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose", "--model", "m", "--", "hi",
    ]  # fmt: skip
