"""What a hostile-user pass on the merged tool found: each is refused before launch, or
read as a user means it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.faultlib import ORCHESTRATOR, clean_env, fake_claude, write_config


def run(args: list[str], folder: Path, stdout: int | None = subprocess.PIPE) -> tuple[int, str]:
    done = subprocess.run(
        [*ORCHESTRATOR, *args],
        cwd=folder, env=clean_env(), stdin=subprocess.DEVNULL, stdout=stdout,
        stderr=subprocess.PIPE, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stderr


@pytest.mark.parametrize("stream", ["/dev/stdout", "/dev/stderr"])
def test_the_summary_may_not_overwrite_the_log(tmp_path: Path, stream: str) -> None:
    fake = fake_claude(tmp_path)
    log = tmp_path / "log.txt"
    with log.open("w") as out:
        code, err = run(["/a", "--claude-bin", str(fake.path), "--summary-json", stream],
                        tmp_path, stdout=out.fileno())  # fmt: skip
    assert code == 2
    assert "is the orchestrator's own standard" in err
    assert fake.pids() == []  # refused before launch
    assert log.read_text() == ""


def test_an_empty_summary_path_is_refused(tmp_path: Path) -> None:
    fake = fake_claude(tmp_path)
    code, err = run(["/a", "--claude-bin", str(fake.path), "--summary-json", ""], tmp_path)
    assert (code, err.strip()) == (
        2,
        "orchestrator: error: --summary-json: cannot write there: the path is empty",
    )
    assert fake.pids() == []


@pytest.mark.parametrize("interval", ["1e-9", "0.001"])
def test_a_report_interval_that_would_flood_the_log_is_refused(
    tmp_path: Path, interval: str
) -> None:
    code, err = run(["--demo", "--status-report-interval", interval], tmp_path)
    assert code == 2
    assert "must be 0 (final summary only) or at least 0.01" in err


def test_limits_written_as_strings_in_a_file_read_as_on_the_command_line(tmp_path: Path) -> None:
    fake = fake_claude(tmp_path)
    config = write_config(
        tmp_path,
        [{"name": "a", "command": "/a"}],
        {"command_budgets": {"/a": "5k"}, "command_cost_budgets": {"/a": "$2.50"},
         "overall_budget": "10M"},
    )  # fmt: skip
    done = subprocess.run(
        [*ORCHESTRATOR, "--config", str(config), "--claude-bin", str(fake.path), "--dry-run"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "overall: 10,000,000 tokens (10M)" in done.stdout
    assert "/a: 5,000 tokens (5K)" in done.stdout
    assert "/a: $2.50" in done.stdout
    assert json.loads(config.read_text())["budget"]["command_budgets"]["/a"] == "5k"
