"""Asking the Claude Code CLI its version: parsing, what an old version changes, and fake
executables that hang, lie, flood or leave children behind."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.claude_version import (
    PARTIAL_MESSAGES_SINCE,
    VersionCheck,
    check_version,
    parse_version,
)


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("2.1.197 (Claude Code)\n", (2, 1, 197)),
        ("1.0.108 (Claude Code)", (1, 0, 108)),
        ("  v2.0.0\nmore text\n", (2, 0, 0)),
        ("10.20.30-beta.1 (Claude Code)", (10, 20, 30)),
        ("Claude Code 2.1.197", None),  # the version must come first
        ("2.1", None),
        ("2.1.x", None),
        ("", None),
        ("\n\n1.2.3", (1, 2, 3)),  # leading blank lines are not output
    ],
)
def test_parse_version(output: str, version: tuple[int, int, int] | None) -> None:
    assert parse_version(output) == version


def test_partial_messages_from_1_0_109_and_when_the_version_is_unknown() -> None:
    assert PARTIAL_MESSAGES_SINCE == (1, 0, 109)  # 1.0.108 refuses the flag (real CLI)
    assert VersionCheck((1, 0, 108)).partial_messages is False
    assert VersionCheck((0, 2, 9)).partial_messages is False
    assert VersionCheck((1, 0, 109)).partial_messages is True
    assert VersionCheck((2, 1, 332)).partial_messages is True
    assert VersionCheck(None, "garbage").partial_messages is True


def test_warnings_are_one_line_and_only_when_there_is_something_to_say() -> None:
    old = VersionCheck((1, 0, 108)).warning("/opt/claude")
    assert old is not None and "\n" not in old
    assert "/opt/claude is Claude Code 1.0.108" in old
    assert "without --include-partial-messages" in old
    unknown = VersionCheck(None, "--version printed 'x', not a version").warning("/opt/claude")
    assert unknown is not None and "\n" not in unknown
    assert "cannot tell the version of /opt/claude" in unknown
    assert "printed 'x'" in unknown
    assert VersionCheck((1, 0, 109)).warning("/opt/claude") is None


def script(tmp_path: Path, body: str, name: str = "claude") -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def pid_gone(pid: int, timeout_s: float = 2.0) -> bool:
    """Whether ``pid`` is dead (gone, or a zombie nobody reaped yet) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_real_looking_version_is_read(tmp_path: Path) -> None:
    claude = script(tmp_path, '[ "$1" = --version ] && echo "1.0.108 (Claude Code)"')
    assert check_version([str(claude)]) == VersionCheck((1, 0, 108))


def test_leading_arguments_of_the_command_are_kept(tmp_path: Path) -> None:
    claude = script(tmp_path, 'echo "$1 $2"')
    # The version flag comes after the command's own leading arguments.
    check = check_version(["/bin/sh", str(claude), "lead"])
    assert check.problem == "--version printed 'lead --version', not a version"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("echo garbage", "--version printed 'garbage', not a version"),
        ("echo 'x (GNU) 9.1'; echo more", "--version printed 'x (GNU) 9.1', not a version"),
        ("true", "--version printed 'nothing', not a version"),
        ("echo 2.1.197; exit 3", "--version exited with status 3"),
        ("kill -9 $$", "--version exited with status -9"),
        ("yes 1.2.3", "--version printed more than 4096 bytes"),
    ],
)
def test_what_is_not_a_version_says_why(tmp_path: Path, body: str, problem: str) -> None:
    check = check_version([str(script(tmp_path, body))])
    assert check == VersionCheck(None, problem)
    assert check.partial_messages is True  # the run goes on as for a current CLI


def test_an_executable_that_cannot_start(tmp_path: Path) -> None:
    missing = check_version([str(tmp_path / "nowhere")])
    assert missing.problem == "--version could not start: No such file or directory"
    not_executable = tmp_path / "plain"
    not_executable.write_text("echo 2.1.197\n")
    denied = check_version([str(not_executable)])
    assert denied.problem == "--version could not start: Permission denied"


def test_a_hang_costs_the_timeout_and_leaves_nothing_running(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    claude = script(tmp_path, f"sleep 60 & echo $! > {pidfile}\nsleep 60")
    started = time.monotonic()
    check = check_version([str(claude)], timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert check == VersionCheck(None, "--version did not finish within 0.5 s")
    assert 0.5 <= elapsed < 3
    assert pid_gone(int(pidfile.read_text()))  # the child it started went with it


def test_a_child_holding_stdout_open_neither_delays_nor_outlives_the_check(
    tmp_path: Path,
) -> None:
    # The version is printed and the script exits, but a background child keeps the pipe
    # open: waiting for end-of-file would take the whole timeout.
    pidfile = tmp_path / "child.pid"
    claude = script(tmp_path, f"sleep 60 & echo $! > {pidfile}\necho '2.0.0 (Claude Code)'")
    started = time.monotonic()
    check = check_version([str(claude)], timeout_s=5)

    assert check == VersionCheck((2, 0, 0))
    assert time.monotonic() - started < 2.5
    assert pid_gone(int(pidfile.read_text()))


def test_asked_once_per_run_and_never_for_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    asked: list[tuple[str, ...]] = []

    def fake_check(claude_cmd: tuple[str, ...]) -> VersionCheck:
        asked.append(tuple(claude_cmd))
        return VersionCheck((1, 0, 108))

    monkeypatch.setattr(cli, "check_version", fake_check)
    assert cli.main(["--demo", "--dry-run"]) == 0
    assert asked == []
    assert "--include-partial-messages" in capsys.readouterr().out  # the simulator has it

    config = tmp_path / "two.json"
    config.write_text(json.dumps({"instances": [{"command": "/a"}, {"command": "/b"}]}))
    assert cli.main(["--config", str(config), "--dry-run", f"--claude-bin={sys.executable}"]) == 0
    assert asked == [(sys.executable,)]
    out, err = capsys.readouterr()
    assert out.count(f"{sys.executable} -p --output-format stream-json --verbose -- /") == 2
    assert "--include-partial-messages" not in out
    assert "is Claude Code 1.0.108" in err
