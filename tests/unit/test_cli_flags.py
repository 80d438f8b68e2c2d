"""Command-line flags at their edges: numbers that are not finite or too large, values that
start with '-', what --help says, and --workspace checked before anything is launched."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import workspace
from orchestrator.cli import MAX_SECONDS, build_parser, build_run
from orchestrator.config import ConfigError
from orchestrator.workspace import workspace_problem

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def refused(*argv: str) -> str:
    with pytest.raises(ConfigError) as info:
        build_run(parse(*argv, f"--claude-bin={sys.executable}"))
    return str(info.value)


# -- numbers -----------------------------------------------------------------------------------

SECONDS_FLAGS = ["--startup-delay", "--timeout", "--status-report-interval"]


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
@pytest.mark.parametrize("flag", SECONDS_FLAGS)
def test_seconds_must_be_finite(flag: str, value: str) -> None:
    message = refused("/a", f"{flag}={value}")
    assert f"argument {flag}: {value!r} is not a finite number" in message


@pytest.mark.parametrize("flag", SECONDS_FLAGS)
def test_seconds_stop_at_a_week(flag: str) -> None:
    assert MAX_SECONDS == 7 * 24 * 3600
    assert getattr(parse("/a", f"{flag}={MAX_SECONDS}"), flag[2:].replace("-", "_")) == MAX_SECONDS
    message = refused("/a", f"{flag}={MAX_SECONDS + 1}")
    assert f"argument {flag}: '{MAX_SECONDS + 1}' must be at most {MAX_SECONDS}" in message


@pytest.mark.parametrize("value", ["1001", "1e3", "inf", "nan"])
def test_max_concurrent_is_a_whole_number_up_to_a_thousand(value: str) -> None:
    assert "argument --max-concurrent: " in refused("/a", f"--max-concurrent={value}")
    assert parse("/a", "--max-concurrent=1000").max_concurrent == 1000


@pytest.mark.parametrize(
    ("flag", "value", "problem"),
    [
        ("--overall-token-budget", "nan", "'nan' is not a number"),
        ("--overall-token-budget", "1001T", "'1001T' is not a number"),
        ("--overall-token-budget", "1000001B", "over the largest token budget, 10^15"),
        ("--overall-cost-budget", "inf", "'inf' is not a plain amount"),
        ("--overall-cost-budget", "5k", "'5k' is not a plain amount"),
        ("--command-cost-budget", "/a=5k", "'5k' is not a plain amount"),
        ("--command-cost-budget", "/a=1e3", "'1e3' is not a plain amount"),
        ("--command-budget", "/a b=5k", "budget key '/a b' contains whitespace"),
        ("--command-budget", "/a==5", "limit '=5' is not a number"),
        ("--command-budget", "overall=5k", "key of the overall budget"),
    ],
)
def test_budget_flags_at_their_edges(flag: str, value: str, problem: str) -> None:
    message = refused("/a", f"{flag}={value}")
    assert message.startswith(flag) and problem in message, message


# -- values that start with '-' ----------------------------------------------------------------


def test_claude_arg_takes_the_next_word_even_if_it_starts_with_a_dash() -> None:
    run = build_run(
        parse(
            "/a",
            "--claude-arg",
            "--model",
            "--claude-arg",
            "opus",
            "--claude-arg=--max-turns=3",
            "--claude-arg",
            "-v",
            f"--claude-bin={sys.executable}",
        )
    )
    assert run.extra_args == ("--model", "opus", "--max-turns=3", "-v")
    assert [spec.prompt for spec in run.instances] == ["/a"]


def test_claude_arg_after_a_double_dash_is_the_command() -> None:
    args = parse("--claude-arg", "-x", "--", "--claude-arg")
    assert (args.claude_arg, args.command) == (["-x"], "--claude-arg")


@pytest.mark.parametrize(
    "after", [[], ["--dry-run"], ["--dry"], ["--summary-json=s.json"], ["-h"], ["--claude-arg"]]
)
def test_claude_arg_before_one_of_our_own_options_is_missing_its_value(after: list[str]) -> None:
    # Taking "--dry-run" as the value would launch a real run the user meant to be dry.
    with pytest.raises(ConfigError) as info:
        parse("/a", "--claude-arg", *after)
    assert str(info.value) == (
        "argument --claude-arg: expected one argument (to give claude one of orchestrator's "
        "own options, write --claude-arg=--OPTION) (see --help)"
    )


def test_claude_arg_with_equals_passes_even_our_own_options() -> None:
    assert parse("/a", "--claude-arg=--dry-run", "--claude-arg=-h").claude_arg == [
        "--dry-run",
        "-h",
    ]


def test_claude_arg_with_a_nul_byte_is_refused() -> None:
    assert refused("/a", "--claude-arg=a\0b") == (
        "--claude-arg 'a\\x00b' contains a NUL byte, which cannot be passed as an argument"
    )


def test_a_command_with_a_nul_byte_is_refused() -> None:
    assert refused("/a b\0c") == (
        "COMMAND: 'prompt' contains a NUL byte, which cannot be passed as an argument"
    )


def test_a_command_whose_first_word_has_a_control_character_is_refused() -> None:
    assert refused("/a\x1b[2J do it").startswith(
        "COMMAND: budget key '/a\\x1b[2J' contains a control character (U+001B)"
    )


# -- --help ------------------------------------------------------------------------------------


def test_help_gives_every_flag_a_default() -> None:
    parser = build_parser()
    undocumented = [
        action.option_strings[-1]
        for action in parser._actions
        if action.option_strings
        and action.dest not in ("help", "version")
        and "(default: " not in (action.help or "")
    ]
    assert undocumented == []


def test_help_shows_how_to_pass_a_claude_arg_that_starts_with_a_dash() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "--claude-arg --max-turns --claude-arg 3" in text
    assert "--claude-arg=--model=opus" in text
    assert "plain amounts: 5, 2.50 or $2.50 (no k/M" in text


# -- --workspace -------------------------------------------------------------------------------


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder every user may enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="orchestrator-ws-"))
    folder.chmod(0o755)
    yield folder
    for sub in folder.iterdir():
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(folder)


def check_as(user: str | None, path: Path) -> str | None:
    """``workspace_problem(path)`` in this process, or as ``user`` (root can enter anything,
    so a mode-000 folder is only refused for someone else)."""
    if user is None:
        return workspace_problem(str(path))
    # The module's own file, copied where ``user`` can read it (the checkout may sit in a
    # folder only root can enter), run by an interpreter that user can start.
    copy = path.parent / "workspace_check.py"
    shutil.copy(workspace.__file__, copy)
    copy.chmod(0o644)
    code = "import sys; from workspace_check import workspace_problem as w; print(w(sys.argv[1]))"
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    done = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
         python, "-c", code, str(path)],
        cwd="/", env={"PYTHONPATH": str(path.parent), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = done.stdout.strip()
    return None if out == "None" else out


def other_user() -> str | None:
    if os.geteuid() != 0:
        return None  # already not root: the check runs here
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to check a folder as a user other than root")
    return "65534"  # nobody


def test_a_workspace_that_cannot_be_entered_is_named(shared_folder: Path) -> None:
    user = other_user()
    locked, fine = shared_folder / "locked", shared_folder / "fine"
    locked.mkdir(mode=0o000)
    fine.mkdir(mode=0o755)
    locked.chmod(0o000)
    write_only = shared_folder / "no-read"
    write_only.mkdir()
    write_only.chmod(0o311)  # may enter, may not list

    assert check_as(user, fine) is None  # the user can reach the shared folder at all
    assert check_as(user, locked) == "cannot be entered and read: permission denied"
    assert check_as(user, write_only) == "cannot be entered and read: permission denied"


def test_a_workspace_that_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert workspace_problem(str(tmp_path / "file")) == "is not a directory"
    assert workspace_problem(str(tmp_path / "missing")) == "does not exist"
    assert workspace_problem(str(tmp_path / "file" / "sub")) == "cannot be reached: Not a directory"
    assert workspace_problem(str(tmp_path)) is None


def test_a_bad_workspace_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert refused("/a", f"--workspace={tmp_path / 'file'}") == (
        f"--workspace {tmp_path / 'file'}: is not a directory"
    )
