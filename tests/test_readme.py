"""README.md: short, its links resolve, its commands parse, and its first bug fails as it says."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from voprd import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SIZE_MAX = 12 * 1024
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest"
)


def text() -> str:
    return README.read_text()


def shell_lines() -> list[str]:
    blocks = re.findall(r"^```sh\n(.*?)^```", text(), flags=re.MULTILINE | re.DOTALL)
    lines: list[str] = []
    for block in blocks:
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def voprd_commands() -> list[list[str]]:
    commands = []
    for line in shell_lines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["voprd"]:
            commands.append(words[1:])
    return commands


def test_readme_is_at_most_12_kb() -> None:
    assert len(README.read_bytes()) <= SIZE_MAX


def test_readme_keeps_the_test_command_ci_runs() -> None:
    assert TEST_COMMAND in shell_lines()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()


def test_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", text())
    assert "docs/report-screenshot.png" in targets
    for target in targets:
        assert (ROOT / target).exists(), target
    for guide in sorted((ROOT / "docs").glob("*.md")):  # every guide is in the index
        assert f"(docs/{guide.name})" in text(), guide.name


def test_readme_install_activates_the_venv() -> None:
    install = next(line for line in shell_lines() if line.startswith("python3 -m venv"))
    assert install.endswith(". .venv/bin/activate")


def test_readme_voprd_commands_parse() -> None:
    commands = voprd_commands()
    assert len(commands) >= 6
    for words in commands:
        if words and words[0] in cli.SUBCOMMANDS:
            continue  # their own parsers; `--help` of each is tested with its module
        if words == ["COMMAND", "--help"]:
            continue
        cli.parse(words)  # exits (SystemExit) on a bad flag or value


def first_bug() -> tuple[list[str], dict[int, str]]:
    """The section's run command, and the seeds the README says fail, with their invariants."""
    section = text().split("## Find your first bug", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"^voprd (run .*--bug \S+)$", section, flags=re.MULTILINE)
    assert command, "no `voprd run ... --bug NAME` in the first-bug section"
    claims = re.findall(r"seeds ([\d, and\n]+) fail the \*\*(\w+)\*\* invariant", section)
    assert claims, "the section does not say which seeds fail"
    failing = {int(seed): invariant for seeds, invariant in claims
               for seed in re.findall(r"\d+", seeds)}
    return shlex.split(command[1]), failing


def test_the_first_bug_fails_as_the_readme_says(tmp_path: Path) -> None:
    words, claimed = first_bug()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VOPRD_") and k != "STATE_DIRECTORY"}
    env.update(TMPDIR=str(tmp_path), HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "voprd", *words, "--json"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed = {}
    for line in proc.stdout.splitlines():
        event = json.loads(line)
        if event["type"] == "iteration" and event["data"]["status"] == "failed":
            failed[event["data"]["seed"]] = event["data"]["invariant"]
    assert failed == claimed
    # The replay commands the section gives fail the same way, and the report is written.
    bug = words[words.index("--bug") + 1]
    replays = [w for w in voprd_commands() if w[:1] == ["replay"] and bug in w]
    assert replays
    for replay in replays:
        assert int(replay[1]) in claimed
        invariant = claimed[int(replay[1])]
        proc = subprocess.run([sys.executable, "-m", "voprd", *replay], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"invariant={invariant}" in proc.stdout
        if "--report" in replay:
            report = tmp_path / replay[replay.index("--report") + 1]
            assert report.read_text().startswith("<!DOCTYPE html>")
