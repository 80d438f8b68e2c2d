"""Whole runs of the installed ``orchestrator`` against simulated ``claude`` processes:
exact counting in parallel, each way a CLI run can end, and the 50 MB line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness import (
    RUN_TIMEOUT_S,
    FakeClaude,
    MakeFakeClaude,
    Result,
    Runner,
    Sim,
    clean_env,
    instance,
)

from orchestrator.simulator import DEFAULT_ERROR_TEXT

# Distinct numbers and models per instance, so a mix-up between instances cannot go unseen.
PARALLEL = {
    "analyze-src": ("/analyze src", Sim(calls=3, input=1000, output=300, cache_creation=100,
                                        cache_read=2000, delay=0.004)),
    "analyze-doc": ("/analyze docs", Sim(calls=2, input=2500, output=700, cache_creation=0,
                                         cache_read=12000, model="claude-sonnet-4-5",
                                         delay=0.004)),
    "review-a": ("/review a", Sim(calls=4, input=333, output=77, cache_creation=55,
                                  cache_read=0, model="claude-haiku-4-5", delay=0.004)),
    "review-b": ("/review b", Sim(calls=1, input=4096, output=1024, cache_creation=512,
                                  cache_read=8192, model="claude-opus-4-1", delay=0.004)),
}  # fmt: skip


def running_counts(stdout: str) -> list[int]:
    """How many instances ran after each launch or end, from the log lines."""
    counts, running = [], 0
    for line in stdout.splitlines():
        if " LAUNCH " in line:
            running += 1
        elif " DONE " in line or " FAIL " in line:
            running -= 1
        else:
            continue
        counts.append(running)
    return counts


def test_parallel_instances_are_counted_exactly(runner: Runner) -> None:
    config = runner.config(
        [instance(name, command, sim) for name, (command, sim) in PARALLEL.items()],
        {"overall_budget": 10_000_000, "command_budgets": {"/analyze": 1_000_000}},
    )

    result = runner.run("--config", str(config), "--max-concurrent", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.summary
    assert summary is not None
    assert summary["exit_code"] == 0
    for name, (command, sim) in PARALLEL.items():
        inst = result.instance(name)
        assert inst["command"] == command
        assert inst["status"] == "succeeded"
        assert inst["final"] is True
        assert inst["exit_code"] == 0
        assert inst["error"] is None
        assert inst["tokens"] == sim.usage(), name
        assert inst["cost_usd"] == sim.cost(), name
        assert inst["cost_is_estimate"] is False
    expected_total = {
        kind: sum(sim.usage()[kind] for _, sim in PARALLEL.values())
        for kind in ("input", "output", "cache_creation", "cache_read", "total")
    }
    assert summary["totals"]["tokens"] == expected_total
    assert summary["totals"]["cost_usd"] == pytest.approx(
        sum(sim.cost() for _, sim in PARALLEL.values()), rel=1e-12
    )
    assert result.budget("overall")["used"] == expected_total["total"]
    analyze = [sim.usage()["total"] for command, sim in PARALLEL.values() if "/analyze" in command]
    assert result.budget("/analyze")["used"] == sum(analyze)
    # At most two at once, and really two at once.
    assert max(running_counts(result.stdout)) == 2
    assert len(runner.claude.launches()) == 4
    runner.claude.assert_no_process_left()


def test_command_mode_with_claude_bin_from_environment(runner: Runner) -> None:
    """``orchestrator COMMAND`` runs one instance keyed by the slash command."""
    result = runner.run(
        "/analyze src --deep",
        "--claude-arg=--sim-calls=1",
        claude_bin=False,
        env={"ORCHESTRATOR_CLAUDE_BIN": str(runner.claude.path)},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    inst = result.instance("analyze")
    assert inst["budget_key"] == "/analyze"
    assert inst["command"] == "/analyze src --deep"
    assert inst["tokens"] == Sim(calls=1).usage()
    [launch] = runner.claude.launches()
    assert launch.argv[-3:] == ["--sim-calls=1", "--", "/analyze src --deep"]


def test_workspace_is_the_working_directory_of_every_instance(runner: Runner) -> None:
    workspace = runner.workdir / "project"
    workspace.mkdir()
    config = runner.config([instance("a", "/a"), instance("b", "/b")])

    result = runner.run("--config", str(config), "--workspace", str(workspace))

    assert result.returncode == 0, result.stdout + result.stderr
    for launch in runner.claude.launches():
        init = json.loads(runner.claude.stdout_of(launch).split(b"\n", 1)[0])
        assert init["subtype"] == "init"
        assert Path(init["cwd"]) == workspace


# -- each way a CLI run can end ------------------------------------------------------------

FAILURE_SIMS = {
    "crash": Sim(calls=4, fail="crash"),
    "error-result": Sim(calls=2, fail="error-result"),
    "no-result": Sim(calls=2, fail="no-result"),
    "exit-nonzero": Sim(calls=2, fail="exit-nonzero"),
    "garbage": Sim(calls=3, fail="garbage", model="claude-sonnet-4-5"),
    "invalid-utf8": Sim(calls=2, fail="invalid-utf8"),
    "null-usage": Sim(calls=3, fail="null-usage"),
    "stderr-flood": Sim(calls=2, fail="stderr-flood", model="claude-haiku-4-5"),
}


@pytest.fixture(scope="module")
def failure_modes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, FakeClaude]:
    """One run with an instance per simulated failure mode (all at once, to keep it quick)."""
    base = tmp_path_factory.mktemp("failure-modes")
    claude = FakeClaude(base / "fake")
    runner = Runner(base, claude)
    config = runner.config(
        [instance(mode, f"/{mode} run", sim) for mode, sim in FAILURE_SIMS.items()]
    )
    result = runner.run("--config", str(config), f"--max-concurrent={len(FAILURE_SIMS)}")
    claude.assert_no_process_left()
    return result, claude


def test_a_failed_instance_makes_the_run_exit_1(failure_modes: tuple[Result, FakeClaude]) -> None:
    result, _ = failure_modes
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.summary is not None
    assert result.summary["exit_code"] == 1
    assert "Exit status 1" in result.stdout


def test_crash_is_failed_with_its_exit_code_and_live_counts(
    failure_modes: tuple[Result, FakeClaude],
) -> None:
    result, claude = failure_modes
    inst = result.instance("crash")
    assert inst["status"] == "failed"
    assert inst["exit_code"] == 1
    assert "exit code 1" in inst["error"]
    assert "simulated crash" in inst["error"]  # the last stderr line says why
    assert inst["final"] is False
    # Live counts kept: two whole calls and the start of the third, as printed.
    printed = claude.counted("/crash run")
    assert not printed.is_final
    assert inst["tokens"] == printed.usage.as_dict()
    assert inst["tokens"]["total"] > FAILURE_SIMS["crash"].usage(calls=2)["total"]


def test_error_result_is_failed_with_the_cli_error_text(
    failure_modes: tuple[Result, FakeClaude],
) -> None:
    result, _ = failure_modes
    inst = result.instance("error-result")
    assert inst["status"] == "failed"
    assert inst["error"] == DEFAULT_ERROR_TEXT
    assert inst["final"] is True
    assert inst["tokens"] == FAILURE_SIMS["error-result"].usage()


def test_exit_0_without_result_line_is_failed(failure_modes: tuple[Result, FakeClaude]) -> None:
    result, _ = failure_modes
    inst = result.instance("no-result")
    assert inst["status"] == "failed"
    assert inst["exit_code"] == 0
    assert inst["error"] == "no result line"
    assert inst["final"] is False
    assert inst["tokens"] == FAILURE_SIMS["no-result"].usage()  # the live count is complete


def test_nonzero_exit_after_a_result_is_failed(failure_modes: tuple[Result, FakeClaude]) -> None:
    result, _ = failure_modes
    inst = result.instance("exit-nonzero")
    assert inst["status"] == "failed"
    assert inst["exit_code"] == 2
    assert inst["error"].startswith("exit code 2")
    assert inst["final"] is True
    assert inst["tokens"] == FAILURE_SIMS["exit-nonzero"].usage()


@pytest.mark.parametrize("mode", ["garbage", "invalid-utf8", "null-usage", "stderr-flood"])
def test_odd_but_successful_runs_are_counted_exactly(
    failure_modes: tuple[Result, FakeClaude], mode: str
) -> None:
    result, _ = failure_modes
    inst = result.instance(mode)
    sim = FAILURE_SIMS[mode]
    assert inst["status"] == "succeeded", inst["error"]
    assert inst["final"] is True
    assert inst["tokens"] == sim.usage()
    assert inst["cost_usd"] == sim.cost()


# -- the 50 MB line ------------------------------------------------------------------------

_MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""
MAX_RSS_KIB = 60_000  # the orchestrator needs ~25 MB; holding the line would add 50 MB


def test_a_50_mb_line_is_streamed_through_without_holding_it(
    tmp_path: Path, make_fake_claude: MakeFakeClaude
) -> None:
    claude = make_fake_claude(copy_stdout=False)  # no 50 MB copy on disk
    runner = Runner(tmp_path, claude)
    sim = Sim(calls=2, fail="huge-line", extra=("--sim-huge-bytes=50000000",))
    config = runner.config([instance("huge", "/huge", sim), instance("small", "/small")])

    proc = subprocess.run(
        [sys.executable, "-c", _MEASURE, *runner.argv(["--config", str(config)])],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = Result(proc.returncode, proc.stdout, proc.stderr, runner.read_summary())
    inst = result.instance("huge")
    assert inst["status"] == "succeeded"
    assert inst["final"] is True
    assert inst["tokens"] == sim.usage()
    assert inst["cost_usd"] == sim.cost()
    assert result.instance("small")["tokens"] == Sim().usage()
    max_rss_kib = int(proc.stderr.strip().splitlines()[-1])
    assert max_rss_kib < MAX_RSS_KIB, f"orchestrator peaked at {max_rss_kib} KiB"
    claude.assert_no_process_left()


def test_a_model_missing_from_the_price_table_is_named_in_the_summary(runner: Runner) -> None:
    # No result line: the cost stays an estimate, made at the default family's prices.
    sim = Sim(model="claude-mystery-9", fail="no-result")
    config = runner.config([instance("odd", "/odd", sim), instance("known", "/known")])
    result = runner.run("--config", str(config))
    assert result.instance("odd")["cost_is_estimate"] is True
    assert "models not in the price table, estimated at default prices: claude-mystery-9" in (
        result.stdout
    )
