"""The real Claude Code CLI for end-to-end tests: pinned npm installs, and their environment.

Each version is installed with npm into a cache folder outside the repository, side by side:
`$ORCHESTRATOR_E2E_CACHE/claude-code-<version>` (default root: `~/.cache/orchestrator-e2e`).
`python tests/e2e/claude_cli.py` installs every tested version (if needed) and prints the paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI_PACKAGE = "@anthropic-ai/claude-code"
CLI_VERSION = "2.1.197"  # the pinned version most tests run
# Also tested (tests/e2e/test_cli_versions.py): the oldest supported, 1.0.108, the last CLI
# without --include-partial-messages (the orchestrator runs it without; 1.0.109 has the flag);
# a 2.0.x; and the newest version the registry served when this list was written
# (`npm view @anthropic-ai/claude-code version`).
OLD_CLI_VERSION = "1.0.108"
NEWEST_CLI_VERSION = "2.1.332"
TESTED_VERSIONS = (OLD_CLI_VERSION, "2.0.0", CLI_VERSION, NEWEST_CLI_VERSION)
CACHE_ENV = "ORCHESTRATOR_E2E_CACHE"
OAUTH_TOKEN = "sk-ant-oat01-fake"  # a subscription's token, to the CLI (the fake checks none)
NPM_TIMEOUT_S = 600

# The `cli_env` fixture: (base_url, max_retries=..., timeout_ms=...) -> environment.
CliEnvFactory = Callable[..., dict[str, str]]

# Variables that would send the CLI elsewhere than the fake, or change how it authenticates.
_LEAKY_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "CLAUDECODE", "AWS_BEARER_TOKEN_BEDROCK")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "orchestrator-e2e")


def install_dir(version: str = CLI_VERSION) -> Path:
    return cache_root() / f"claude-code-{version}"


def claude_executable(prefix: Path) -> Path:
    return prefix / "node_modules" / ".bin" / "claude"


def installed_version(prefix: Path) -> str | None:
    """The version in the installed package.json, or None when it is absent or unreadable."""
    manifest = prefix / "node_modules" / CLI_PACKAGE / "package.json"
    try:
        return str(json.loads(manifest.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_claude_cli(version: str = CLI_VERSION) -> tuple[Path | None, str]:
    """Install the pinned CLI unless it is already there; return (path of `claude`, reason).

    On failure the path is None and the reason says why (for pytest.skip).
    """
    prefix = install_dir(version)
    with _install_lock(prefix):
        if installed_version(prefix) != version:
            error = _npm_install(prefix, version)
            if error:
                return None, error
        return _check_runs(prefix, version)


def _npm_install(prefix: Path, version: str) -> str | None:
    """Run npm; return an error message, or None on success."""
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found on PATH: cannot install the Claude Code CLI"
    prefix.mkdir(parents=True, exist_ok=True)
    # 2.1.x declares node >= 22 from some version on, but ships a native binary that Node
    # never runs (npm only warns): a machine's Node 20 installs it as well.
    cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
    cmd.append("--engine-strict=false")
    cmd.append(f"{CLI_PACKAGE}@{version}")
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install {CLI_PACKAGE}@{version} failed: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return f"npm install {CLI_PACKAGE}@{version} failed (exit {done.returncode}): " + (
            " | ".join(tail)
        )
    if installed_version(prefix) != version:
        return f"npm install finished but {CLI_PACKAGE}@{version} is not in {prefix}"
    return None


def ensure_claude_clis(versions: Sequence[str]) -> dict[str, tuple[Path | None, str]]:
    """`ensure_claude_cli` for several versions at once (npm mostly waits on the network)."""
    with ThreadPoolExecutor(max_workers=len(versions) or 1) as pool:
        return dict(zip(versions, pool.map(ensure_claude_cli, versions), strict=True))


def _check_runs(prefix: Path, version: str) -> tuple[Path | None, str]:
    """`claude --version` must work. The npm package's postinstall puts the native binary in
    place; if scripts were disabled (npm ignore-scripts), run that step ourselves once."""
    exe = claude_executable(prefix)
    if _reports_version(exe, version):
        return exe, f"{CLI_PACKAGE}@{version} at {exe}"
    node = shutil.which("node")
    package_dir = prefix / "node_modules" / CLI_PACKAGE
    if node and (package_dir / "install.cjs").exists():
        subprocess.run(
            [node, "install.cjs"], cwd=package_dir, capture_output=True, timeout=120, check=False
        )
        if _reports_version(exe, version):
            return exe, f"{CLI_PACKAGE}@{version} at {exe}"
    return None, f"{exe} does not run or does not report version {version}"


def _reports_version(exe: Path, version: str) -> bool:
    try:
        done = subprocess.run(
            [str(exe), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and version in done.stdout


@contextlib.contextmanager
def _install_lock(prefix: Path) -> Iterator[None]:
    """Serialize installs between processes (e.g. pytest-xdist workers) sharing the cache."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    with open(prefix.parent / f"{prefix.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cli_env(
    base_url: str,
    home: Path | str,
    tmpdir: Path | str,
    *,
    max_retries: int = 1,
    timeout_ms: int = 3000,
    oauth: bool = False,
) -> dict[str, str]:
    """Environment for one CLI run against a fake API at `base_url`, fully offline.

    Scratch HOME/TMPDIR keep the user's config and sessions out. Few retries and a short API
    timeout keep error cases around a second (a `hang` costs about 2 x timeout_ms + 0.5 s).
    `oauth`: authenticate as a subscription (`CLAUDE_CODE_OAUTH_TOKEN`, no API key), the only
    way the CLI reads the rate-limit headers and prints `rate_limit_event` lines.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_LEAKY_PREFIXES) and key not in _PROXY_VARS
    }
    home = Path(home)
    env.update(
        {
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": "sk-test-fake",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(max_retries),
            "API_TIMEOUT_MS": str(timeout_ms),
            "HOME": str(home),
            "TMPDIR": str(tmpdir),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    if oauth:
        del env["ANTHROPIC_API_KEY"]
        env["CLAUDE_CODE_OAUTH_TOKEN"] = OAUTH_TOKEN
    return env


def claude_argv(claude: Path | str, prompt: str, *extra: str, partial: bool = True) -> list[str]:
    """The argv an orchestrator uses: print mode, stream-json, live partial messages (which
    CLIs before 1.0.109 lack), and the prompt last, after `--`."""
    argv = [str(claude), "-p", "--output-format", "stream-json", "--verbose"]
    if partial:
        argv.append("--include-partial-messages")
    return [*argv, *extra, "--", prompt]


@dataclass
class CliRun:
    """A finished CLI run: exit code, parsed stdout lines, stderr, wall time."""

    returncode: int
    lines: list[dict[str, Any]]
    stderr: str
    elapsed_s: float
    raw_stdout: str = field(repr=False, default="")

    @property
    def result(self) -> dict[str, Any] | None:
        return next((o for o in reversed(self.lines) if o.get("type") == "result"), None)

    def of_type(self, line_type: str) -> list[dict[str, Any]]:
        return [o for o in self.lines if o.get("type") == line_type]

    def stream_events(self, event_type: str) -> list[dict[str, Any]]:
        return [
            o["event"] for o in self.of_type("stream_event") if o["event"].get("type") == event_type
        ]


def parse_stream_json(stdout: str) -> list[dict[str, Any]]:
    """JSON objects of a stream-json output; other lines are skipped."""
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
    return lines


def start_claude(
    claude: Path | str,
    prompt: str,
    env: dict[str, str],
    cwd: Path,
    extra: Sequence[str] = (),
    partial: bool = True,
) -> subprocess.Popen[str]:
    """Start the CLI with pipes; stdin is /dev/null (the CLI may otherwise wait on it)."""
    return subprocess.Popen(
        claude_argv(claude, prompt, *extra, partial=partial),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
    )


def finish_claude(proc: subprocess.Popen[str], started: float, timeout_s: float = 60) -> CliRun:
    """Wait for a started CLI (communicate() drains stdout and stderr together)."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    elapsed = time.monotonic() - started
    return CliRun(proc.returncode, parse_stream_json(stdout), stderr, elapsed, stdout)


def run_claude(
    claude: Path | str,
    prompt: str,
    env: dict[str, str],
    cwd: Path,
    extra: Sequence[str] = (),
    timeout_s: float = 60,
) -> CliRun:
    started = time.monotonic()
    return finish_claude(start_claude(claude, prompt, env, cwd, extra), started, timeout_s)


def main() -> int:
    failed = 0
    for version, (path, reason) in ensure_claude_clis(TESTED_VERSIONS).items():
        if path is None:
            print(f"error: {version}: {reason}", file=sys.stderr)
            failed += 1
        else:
            print(f"{version}: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
