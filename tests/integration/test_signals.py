"""Stopping a run from outside: SIGINT/SIGTERM to the orchestrator, and ``--timeout``.
Every child must be gone afterwards (checked by the pids the fake claude recorded)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from harness import MakeFakeClaude, Runner, Sim, instance

SLOW = Sim(calls=50, delay=0.02, deltas=1)  # runs for about 10 s unless stopped


@pytest.mark.parametrize(
    ("signum", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"]
)
def test_a_signal_stops_every_child_and_still_reports(
    tmp_path: Path, make_fake_claude: MakeFakeClaude, signum: signal.Signals, exit_code: int
) -> None:
    # On SIGTERM from the orchestrator the fake claude prints ten more lines, then exits.
    runner = Runner(tmp_path, make_fake_claude(linger_lines=10))
    config = runner.config([instance(f"i{n}", f"/slow {n}", SLOW) for n in (1, 2, 3)])
    proc = runner.start("--config", str(config), "--max-concurrent=2")
    launches = runner.claude.wait_for_launches(2)
    for launch in launches:  # let both spend tokens first
        runner.claude.wait_for_tokens(launch.prompt)

    proc.send_signal(signum)
    result = runner.finish(proc)

    assert result.returncode == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "Summary" in result.stdout
    assert f"Exit status {exit_code}" in result.stdout
    assert len(result.lines_with(f"{signum.name} received")) == 1
    assert result.summary is not None
    assert result.summary["exit_code"] == exit_code
    statuses = {i["name"]: i["status"] for i in result.summary["instances"]}
    assert statuses == {"i1": "cancelled", "i2": "cancelled", "i3": "cancelled"}
    # The two that ran are counted as far as they got; the third never started.
    assert sorted(launch.prompt for launch in runner.claude.launches()) == ["/slow 1", "/slow 2"]
    for name, prompt in (("i1", "/slow 1"), ("i2", "/slow 2")):
        inst = result.instance(name)
        assert inst["final"] is False
        assert inst["exit_code"] == 143  # it lingered after SIGTERM, then exited
        assert 0 < inst["tokens"]["total"] < SLOW.usage()["total"]
        assert inst["tokens"] == runner.claude.counted(prompt).usage.as_dict()
    assert result.instance("i3")["tokens"]["total"] == 0
    runner.claude.assert_no_process_left()


def test_timeout_stops_a_hanging_instance(runner: Runner) -> None:
    hanging = Sim(calls=3, fail="hang")  # one call, then it hangs forever
    config = runner.config(
        [instance("hangs", "/hang", hanging), instance("quick", "/quick", Sim(calls=1))]
    )

    result = runner.run("--config", str(config), "--timeout", "0.5")

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.summary is not None
    assert result.summary["exit_code"] == 1
    hangs = result.instance("hangs")
    assert hangs["status"] == "timed_out"
    assert "timed out after 0.5s" in hangs["error"]
    assert hangs["final"] is False
    assert hangs["tokens"] == hanging.usage(calls=1)
    assert 0.5 <= hangs["duration_s"] < 5
    assert result.instance("quick")["status"] == "succeeded"  # the limit is per instance
    runner.claude.assert_no_process_left()
