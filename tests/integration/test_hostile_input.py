"""The real command fed what a hostile user hands it: odd --summary-json paths, numbers that
are not finite, NUL bytes, duplicate keys, flag values that start with '-'. Each case once
went wrong: a symlink replaced, a FIFO or a device eaten, the config overwritten, a
traceback, a run that hung."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from faultlib import (
    ORCHESTRATOR,
    RunResult,
    clean_env,
    fake_claude,
    filtered_claude,
    run_orchestrator,
    sim_usage,
    simulate,
    usage_of,
    write_config,
)

ROOT_USER = os.geteuid() == 0


def single(claude_path: Path, *sim: str) -> list[str]:
    return ["/x", "--claude-bin", str(claude_path), *(f"--claude-arg={a}" for a in sim)]


def run_to(tmp_path: Path, summary: str, *args: str, timeout: float = 30) -> RunResult:
    """One instance of a launch-recording fake claude, writing ``--summary-json summary``."""
    return run_orchestrator([*args, "--summary-json", summary], tmp_path, timeout, summary=False)


def assert_refused(result: RunResult, *fragments: str) -> None:
    assert result.code == 2, result
    assert result.stdout == "", result
    assert result.stderr.startswith("orchestrator: error: "), result
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result
    for fragment in fragments:
        assert fragment in result.stderr, result


# -- --summary-json ----------------------------------------------------------------------------


def test_a_symlinked_summary_writes_its_target_and_keeps_the_link(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    target = tmp_path / "kept" / "real.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    (tmp_path / "s.json").symlink_to(target)

    result = run_to(tmp_path, "s.json", *single(claude.path))

    assert result.code == 0, result
    assert (tmp_path / "s.json").is_symlink()
    summary = json.loads(target.read_text())
    assert usage_of(summary["instances"][0]["tokens"]) == sim_usage()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_fifo_summary_is_refused_before_launch(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    os.mkfifo(tmp_path / "s.json")
    result = run_to(tmp_path, "s.json", *single(claude.path), timeout=20)
    assert_refused(result, "--summary-json: cannot write there: s.json is a FIFO (named pipe)")
    assert stat.S_ISFIFO((tmp_path / "s.json").lstat().st_mode)
    assert claude.pids() == []


@pytest.mark.skipif(not ROOT_USER, reason="mknod needs root")
def test_a_device_summary_is_refused_and_left_a_device(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    os.mknod(tmp_path / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a /dev/full
    result = run_to(tmp_path, "full", *single(claude.path))
    assert_refused(result, "full is a character device; only a regular file is written")
    assert stat.S_ISCHR((tmp_path / "full").lstat().st_mode)
    assert claude.pids() == []


@pytest.mark.parametrize("spelling", ["same", "symlink", "hard link", "./ and .."])
def test_the_summary_may_not_be_the_config_file(tmp_path: Path, spelling: str) -> None:
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, [{"name": "x", "command": "/x"}])
    before = config.read_text()
    summary = {
        "same": "config.json",
        "symlink": "link.json",
        "hard link": "hard.json",
        "./ and ..": f"../{tmp_path.name}/./config.json",
    }[spelling]
    (tmp_path / "link.json").symlink_to(config)
    os.link(config, tmp_path / "hard.json")
    args = ["--config", "config.json", "--claude-bin", str(claude.path)]

    result = run_to(tmp_path, summary, *args)

    assert_refused(result, "is the config file; it would be overwritten")
    assert config.read_text() == before
    assert claude.pids() == []


@pytest.mark.skipif(not ROOT_USER, reason="only root may write a read-only file")
def test_root_replacing_a_read_only_summary_keeps_its_mode(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    (tmp_path / "s.json").write_text("old")
    (tmp_path / "s.json").chmod(0o444)
    result = run_to(tmp_path, "s.json", *single(claude.path))
    assert result.code == 0, result
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o444
    assert json.loads((tmp_path / "s.json").read_text())["exit_code"] == 0


def test_a_new_summary_gets_the_umasks_mode(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    old = os.umask(0o027)  # inherited by the command
    try:
        result = run_to(tmp_path, "s.json", *single(claude.path))
    finally:
        os.umask(old)
    assert result.code == 0, result
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o640  # not mkstemp's 0600


# -- numbers, keys and bytes the run cannot use --------------------------------------------------


@pytest.mark.parametrize(
    ("budget_json", "fragment"),
    [
        ('{"overall_budget": NaN}', "'overall_budget' must be a number > 0, not nan"),
        ('{"overall_budget": Infinity}', "'overall_budget' must be a number > 0, not inf"),
        ('{"overall_budget": 1e400}', "'overall_budget' must be a number > 0, not inf"),
        ('{"overall_cost_budget": NaN}', "'overall_cost_budget' must be a number of USD > 0"),
        ('{"command_budgets": {"/x": 1, "/x": 900}}', "key '/x' is given twice (1, then 900)"),
    ],
    ids=["NaN", "Infinity", "1e400", "cost NaN", "duplicate key"],
)
def test_a_config_number_json_should_not_hold_is_one_line(
    tmp_path: Path, budget_json: str, fragment: str
) -> None:
    claude = fake_claude(tmp_path)
    (tmp_path / "c.json").write_text(
        '{"instances": [{"name": "x", "command": "/x"}], "budget": ' + budget_json + "}"
    )
    result = run_to(tmp_path, "s.json", "--config", "c.json", "--claude-bin", str(claude.path))
    assert_refused(result, fragment)
    assert claude.pids() == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--startup-delay", "inf"),  # hung the run
        ("--timeout", "nan"),  # said "timed out after nans"
        ("--status-report-interval", "nan"),
        ("--timeout", "1e9"),
    ],
)
def test_a_flag_number_that_is_not_finite_or_too_large_is_refused(
    tmp_path: Path, flag: str, value: str
) -> None:
    claude = fake_claude(tmp_path)
    result = run_to(tmp_path, "s.json", *single(claude.path), f"{flag}={value}", timeout=20)
    assert_refused(result, f"argument {flag}: {value!r} ")
    assert claude.pids() == []


def test_a_nul_byte_in_a_config_prompt_is_refused_before_launch(tmp_path: Path) -> None:
    # It used to raise ValueError inside the spawn, and the run hung.
    claude = fake_claude(tmp_path)
    write_config(
        tmp_path,
        [{"name": "ok", "command": "/ok"}, {"name": "bad", "prompt": "say\u0000hi"}],
    )
    args = ["--config", "config.json", "--claude-bin", str(claude.path)]
    result = run_to(tmp_path, "s.json", *args, timeout=20)
    assert_refused(result, "instances[1]: 'prompt' contains a NUL byte")
    assert claude.pids() == [] and not (tmp_path / "s.json").exists()


def test_a_prompt_over_the_argument_limit_is_refused_before_launch(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    write_config(tmp_path, [{"name": "big", "prompt": "x" * 140_000}])
    args = ["--config", "config.json", "--claude-bin", str(claude.path)]
    result = run_to(tmp_path, "s.json", *args)
    assert_refused(result, "instances[0]: 'prompt' is 140,000 bytes; one argument may hold")
    assert claude.pids() == []


def test_a_name_with_a_newline_is_refused(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    write_config(tmp_path, [{"name": "evil\n[0:00] DONE   fake", "command": "/x"}])
    args = ["--config", "config.json", "--claude-bin", str(claude.path)]
    result = run_to(tmp_path, "s.json", *args)
    assert_refused(result, "instances[0]: name 'evil\\n[0:00] DONE   fake' contains a control")


def test_the_same_budget_flag_twice_is_refused_naming_both(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_to(
        tmp_path,
        "s.json",
        *single(claude.path),
        "--command-budget",
        "/x=10k",
        "--command-budget",
        "/x=90k",
    )
    assert_refused(
        result, "--command-budget /x is given twice ('/x=10k', then '/x=90k'); give each key once"
    )


def test_a_workspace_that_is_a_file_is_named_not_the_executable(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    (tmp_path / "ws").write_text("not a folder")
    result = run_to(tmp_path, "s.json", *single(claude.path), "--workspace", "ws")
    assert_refused(result, "--workspace ws: is not a directory")
    assert claude.pids() == []


# -- what reaches the instance, and what the reports show ----------------------------------------


def dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORCHESTRATOR, *args, "--dry-run", "--claude-bin", "/bin/true"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_claude_arg_with_a_leading_dash_reaches_the_instance(tmp_path: Path) -> None:
    done = dry_run(tmp_path, "/x", "--claude-arg", "--model", "--claude-arg", "opus")
    assert done.returncode == 0, done.stderr
    assert " --model opus" in done.stdout


def test_claude_arg_missing_its_value_before_dry_run_launches_nothing(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_to(tmp_path, "s.json", *single(claude.path), "--claude-arg", "--dry-run")
    assert_refused(result, "argument --claude-arg: expected one argument", "--claude-arg=--")
    assert claude.pids() == []


def test_tiny_and_huge_limits_read_well_in_the_dry_run(tmp_path: Path) -> None:
    done = dry_run(
        tmp_path,
        "/x",
        "--command-cost-budget=/x=0.0000001",
        "--overall-token-budget=999999999999999",
    )
    assert done.returncode == 0, done.stderr
    assert "  /x: $1.0e-07" in done.stdout
    assert "  overall: 999,999,999,999,999 tokens (1000T)" in done.stdout


def test_skipped_lines_are_counted_per_instance_and_named_in_the_table(tmp_path: Path) -> None:
    claude = filtered_claude(tmp_path, inject_after_start=["not json", "{broken"])
    starts = simulate().count(b'"type":"message_start"')
    assert starts > 0

    result = run_orchestrator(["/x", "--claude-bin", str(claude.path)], tmp_path)

    assert result.code == 0, result
    inst = result.instance("x")
    assert inst["skipped_lines"] == 2 * starts
    assert usage_of(inst["tokens"]) == sim_usage()  # the noise costs no token
    assert (
        f"  lines skipped (not stream-json, nothing counted from them): x {2 * starts}"
        in result.stdout.splitlines()
    ), result


def test_no_skipped_lines_no_note(tmp_path: Path) -> None:
    claude = fake_claude(tmp_path)
    result = run_orchestrator(single(claude.path), tmp_path)
    assert result.code == 0, result
    assert result.instance("x")["skipped_lines"] == 0
    assert "lines skipped" not in result.stdout
