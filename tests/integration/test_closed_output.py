"""Output that goes away (``orchestrator ... | head -2``, a pager quit) ends the run as an
interruption: every instance stopped (SIGTERM first), no traceback, the summary JSON written,
and exit status 141 (128 + SIGPIPE) in both the JSON and the process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faultlib import (
    ORCHESTRATOR,
    assert_all_gone,
    clean_env,
    fake_claude,
    process_gone,
    read_summary,
    sim_usage,
    summary_path,
    usage_of,
    write_config,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="pipes and /proc as on Linux")


def hanging(names: list[str]) -> list[dict[str, object]]:
    """Instances that print one whole API call and then hang: the run never ends by itself."""
    args = ["--sim-fail=hang", "--sim-calls=2"]
    return [{"name": n, "command": f"/{n}", "claude_args": args} for n in names]


@pytest.mark.parametrize("quiet", [False, True], ids=["log", "quiet"])
def test_a_reader_that_goes_away_stops_the_run(tmp_path: Path, quiet: bool) -> None:
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, hanging(["a", "b", "c"]))
    args = ["--config", str(config), "--claude-bin", str(claude.path), "--max-concurrent=2"]
    args += ["--summary-json", str(summary_path(tmp_path)), *(["--quiet"] if quiet else [])]
    proc = subprocess.Popen(
        [*ORCHESTRATOR, *args],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        pids = claude.wait_for_pids(2)
        if not quiet:  # as `| head -2`: two lines read, then the reader is gone
            first = [proc.stdout.readline() for _ in range(2)]
            assert all(b"LAUNCH" in line for line in first), first
        proc.stdout.close()
        # With --quiet nothing more is written: the closed pipe is noticed all the same.
        code = proc.wait(timeout=15)
        stderr = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert code == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.splitlines() == [
        "orchestrator: stdout was closed (its reader went away): every instance was stopped; "
        "exit status 141"
    ]
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 141
    statuses = {i["name"]: (i["status"], i["exit_code"]) for i in summary["instances"]}
    # a and b were stopped gracefully (SIGTERM: -15), c never started.
    assert statuses == {"a": ("cancelled", -15), "b": ("cancelled", -15), "c": ("cancelled", None)}
    for inst in summary["instances"][:2]:  # counted as far as they got (one call at most)
        assert usage_of(inst["tokens"]).total <= sim_usage(1).total
    assert_all_gone(pids)
    assert len(claude.pids()) == 2  # nothing launched after the output went away


def test_output_closed_before_anything_was_written(tmp_path: Path) -> None:
    # The output is gone before anything is written (`orchestrator ... | true`).
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, hanging(["a"]))
    script = (
        f"{' '.join(ORCHESTRATOR[:2])} '{ORCHESTRATOR[2]}' --config '{config}' "
        f"--claude-bin '{claude.path}' --summary-json '{summary_path(tmp_path)}' | true; "
        "exit ${PIPESTATUS[0]}"
    )
    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a run that never ends can be stopped whole
    )
    try:
        _, stderr = shell.communicate(timeout=30)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()

    assert shell.returncode == 141, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 141
    assert all(process_gone(pid) for pid in claude.pids())  # if any started at all


@pytest.mark.parametrize("closed", ["1", "0 1 2"], ids=["stdout", "stdin stdout stderr"])
def test_streams_closed_from_the_start_are_discarded_and_the_run_goes_on(
    tmp_path: Path, closed: str
) -> None:
    # `orchestrator ... >&-` (or with 2>&- <&- too): nothing to read the log, but nobody
    # went away either; the results are in the summary JSON. The pipes to the instances must
    # not take the closed numbers (our "stderr" would write into an instance's pipe).
    claude = fake_claude(tmp_path)
    config = write_config(tmp_path, [{"name": n, "command": f"/{n}"} for n in "ab"])
    closes = " ".join(f"{fd}>&-" if fd != "0" else "<&-" for fd in closed.split())
    script = (
        f"exec {' '.join(ORCHESTRATOR[:2])} '{ORCHESTRATOR[2]}' --config '{config}' "
        f"--claude-bin '{claude.path}' --summary-json '{summary_path(tmp_path)}' {closes}"
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    summary = read_summary(tmp_path)
    assert summary is not None and summary["exit_code"] == 0
    assert [i["status"] for i in summary["instances"]] == ["succeeded", "succeeded"]
    assert all(process_gone(pid) for pid in claude.pids())
